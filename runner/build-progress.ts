/**
 * Reads the classic builder's JSON progress stream into log lines, and
 * notices the error message that ends a failed build.
 */
import { createLogger } from "./logger.js";

const log = createLogger("runner:docker");

type OutputStream = "stdout" | "stderr";

/** One message of the progress stream; each arrives on its own line. */
interface BuildMessage {
  stream?: string;
  status?: string;
  id?: string;
  progress?: string;
  error?: string;
  errorDetail?: { message?: string };
}

export class BuildProgress {
  #failure: string | null = null;
  #output: BuildOutput;
  #messages = new LineBuffer((json) => this.#handle(json));

  constructor(private readonly onLine: (line: string, stream: OutputStream) => void) {
    this.#output = new BuildOutput(onLine);
  }

  /** Feeds a chunk of the response, split or joined anywhere. */
  push(chunk: string): void {
    this.#messages.push(chunk);
  }

  /** Flushes what is left; returns Docker's error when the build failed. */
  end(): string | null {
    this.#messages.end();
    this.#output.end();
    return this.#failure;
  }

  #handle(json: string): void {
    if (json.trim() === "") return;
    let message: BuildMessage;
    try {
      message = JSON.parse(json) as BuildMessage;
    } catch {
      log.warn("Ignored an unreadable build message", { json });
      return;
    }
    if (message.error || message.errorDetail) {
      this.#failure =
        message.errorDetail?.message ?? message.error ?? "unknown build error";
    } else if (message.stream !== undefined) {
      this.#output.push(message.stream);
    } else if (message.status && !message.progress) {
      // Image pulls report per-layer status; progress bars are left out.
      this.onLine(
        message.id ? `${message.id}: ${message.status}` : message.status,
        "stdout",
      );
    }
  }
}

/**
 * Splits the builder's `stream` text into stdout and stderr lines. The
 * builder marks each write a build step made to stderr by wrapping it in
 * the ANSI colour codes ESC[91m … ESC[0m; those decide the stream.
 */
class BuildOutput {
  #stream: OutputStream = "stdout";
  #buffers: Record<OutputStream, LineBuffer>;

  constructor(onLine: (line: string, stream: OutputStream) => void) {
    // Docker separates steps with blank lines; they carry nothing.
    const emit = (stream: OutputStream) => (line: string) => {
      if (line.trim() !== "") onLine(line, stream);
    };
    this.#buffers = {
      stdout: new LineBuffer(emit("stdout")),
      stderr: new LineBuffer(emit("stderr")),
    };
  }

  push(text: string): void {
    for (const part of text.split(/(\x1b\[91m|\x1b\[0m)/)) {
      if (part === "\x1b[91m") this.#stream = "stderr";
      else if (part === "\x1b[0m") this.#stream = "stdout";
      else if (part !== "") this.#buffers[this.#stream].push(part);
    }
  }

  end(): void {
    this.#buffers.stdout.end();
    this.#buffers.stderr.end();
  }
}

/** Reassembles lines from chunks that may split or join them anywhere. */
class LineBuffer {
  #pending = "";

  constructor(private readonly onLine: (line: string) => void) {}

  push(chunk: string): void {
    const lines = (this.#pending + chunk).split("\n");
    this.#pending = lines.pop() ?? "";
    for (const line of lines) this.onLine(line.replace(/\r$/, ""));
  }

  end(): void {
    if (this.#pending !== "") this.onLine(this.#pending);
    this.#pending = "";
  }
}
