/**
 * A TCP proxy for fault tests: it forwards 127.0.0.1:<port> to a target and
 * can cut every live connection at once, the way a dropped NAT entry, a
 * restarted load balancer or a flaky link would. Whatever runs through it
 * sees a reset mid-stream, possibly mid-frame, with no close handshake.
 */
import { once } from "node:events";
import net from "node:net";

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
}

export class TcpProxy {
  readonly #server: net.Server;
  readonly #target: { host: string; port: number };
  readonly #pairs = new Set<Pair>();
  /** Connections accepted since the proxy started. */
  connections = 0;
  /** Bytes forwarded from clients to the target, and back. */
  bytesUp = 0;
  bytesDown = 0;

  private constructor(server: net.Server, target: { host: string; port: number }) {
    this.#server = server;
    this.#target = target;
    server.on("connection", (client) => this.#forward(client));
  }

  /** Starts a proxy on a free port of 127.0.0.1 that forwards to `target`. */
  static async start(target: { host?: string; port: number }): Promise<TcpProxy> {
    const server = net.createServer();
    const proxy = new TcpProxy(server, { host: target.host ?? "127.0.0.1", ...target });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return proxy;
  }

  get port(): number {
    return (this.#server.address() as net.AddressInfo).port;
  }

  /** `http://127.0.0.1:<port>`, for clients that take a base URL. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Connections open right now. */
  get live(): number {
    return this.#pairs.size;
  }

  /**
   * Resets every live connection on both sides at once and returns how many
   * there were. The client gets an RST, not a FIN: no goodbye of any kind.
   */
  cutAll(): number {
    const cut = this.#pairs.size;
    for (const pair of this.#pairs) {
      this.#pairs.delete(pair);
      pair.client.resetAndDestroy();
      pair.upstream.resetAndDestroy();
    }
    return cut;
  }

  /** Resolves once `count` connections have been accepted in total. */
  async waitForConnections(count: number, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.connections < count) {
      if (Date.now() > deadline) {
        throw new Error(
          `The proxy saw ${this.connections} connections, not ${count}, in ${timeoutMs} ms`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** Stops listening and cuts what is still open. */
  async close(): Promise<void> {
    this.cutAll();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #forward(client: net.Socket): void {
    this.connections += 1;
    const upstream = net.connect(this.#target.port, this.#target.host);
    const pair = { client, upstream };
    this.#pairs.add(pair);

    client.on("data", (chunk: Buffer) => {
      this.bytesUp += chunk.length;
      // Backpressure: a client faster than the target waits for it.
      if (!upstream.write(chunk)) client.pause();
    });
    upstream.on("drain", () => client.resume());
    upstream.on("data", (chunk: Buffer) => {
      this.bytesDown += chunk.length;
      if (!client.write(chunk)) upstream.pause();
    });
    client.on("drain", () => upstream.resume());

    // A side that ends passes the end on; one that fails takes the other down.
    client.on("end", () => upstream.end());
    upstream.on("end", () => client.end());
    for (const [socket, other] of [
      [client, upstream],
      [upstream, client],
    ]) {
      socket.on("error", () => other.destroy());
      socket.on("close", () => {
        this.#pairs.delete(pair);
        other.end();
      });
    }
  }
}
