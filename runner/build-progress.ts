/**
 * Reads the classic builder's JSON progress stream into log lines, notices
 * the error message that ends a failed build, and notes the image each step
 * produced.
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

/** The image a build step produced, as the classic builder reported it. */
export interface StepImage {
  /** The short id the builder printed (12 hex digits). */
  id: string;
  /** False for FROM and for a step the cache answered: not made by this build. */
  created: boolean;
}

export class BuildProgress {
  #failure: string | null = null;
  #output: BuildOutput;
  #steps: StepTracker;
  #messages = new LineBuffer((json) => this.#handle(json));

  constructor(
    private readonly onLine: (line: string, stream: OutputStream) => void,
    onStep: (step: StepImage) => void = () => {},
  ) {
    this.#steps = new StepTracker(onStep);
    this.#output = new BuildOutput((line, stream) => {
      if (stream === "stdout") this.#steps.see(line);
      onLine(line, stream);
    });
  }

  /** Feeds a chunk of the response, split or joined anywhere. */
  push(chunk: string): void {
    this.#messages.push(chunk);
  }

  /** Flushes what is left; returns Docker's error when the build failed. */
  end(): string | null {
    this.#messages.end();
    this.#output.end();
    this.#steps.end();
    return this.#failure;
  }

  /** The stream broke off (an abort): reports the steps that finished. */
  abandon(): void {
    this.#steps.end();
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
 * Follows the classic builder's step markers: "Step 3/6 : RUN …", then
 * " ---> Using cache" for a cache hit, and " ---> 5c3e…" for the image the
 * step produced. A step's own output comes in between and could imitate a
 * marker, so only the last id line of a step counts, and whoever removes
 * these images checks them first (see images.ts).
 */
class StepTracker {
  #step: { from: boolean; cached: boolean; id: string | null } | null = null;

  constructor(private readonly onStep: (step: StepImage) => void) {}

  see(line: string): void {
    const header = /^Step \d+\/\d+ : (\S+)/.exec(line);
    if (header) {
      this.end();
      this.#step = { from: header[1].toUpperCase() === "FROM", cached: false, id: null };
      return;
    }
    if (!this.#step) return;
    if (line === " ---> Using cache") this.#step.cached = true;
    const id = /^ ---> ([0-9a-f]{12,64})$/.exec(line);
    if (id) this.#step.id = id[1];
  }

  /** Reports the current step, if it produced an image. */
  end(): void {
    const step = this.#step;
    this.#step = null;
    if (step?.id) this.onStep({ id: step.id, created: !step.from && !step.cached });
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
