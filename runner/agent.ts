/**
 * The runner's side of the wire protocol, apart from the socket: which jobs
 * it holds, what it owes the control plane, and what to do with each frame.
 *
 * The connection calls `connected(send)`, `received(frame)` and
 * `disconnected()`; everything else happens here, so tests can drive the
 * protocol frame by frame. Jobs keep running while disconnected; their lines
 * wait in the outbox and go out after the next `welcome`.
 *
 * A job that went live leaves its swap half settled (the replaced container
 * parked) until the control plane answers its result: recorded, the parked
 * container goes; refused, the swap is undone (settle.ts).
 *
 * A deleted service's jobs are aborted and everything of it is removed from
 * Docker (service-removal.ts) before the runner confirms `service.removed`.
 */
import {
  PROTOCOL_VERSION,
  type Job,
  type RunnerFrame,
  type WorkerFrame,
} from "../schema/protocol.js";
import { runDeployment, type DeploymentIO, type DeploymentResult } from "./deploy.js";
import type { DockerClient } from "./docker.js";
import { createLogger, errorMessage } from "./logger.js";
import { maxLinesPerFrame, Outbox, type LeaseRef } from "./outbox.js";
import { listInventory, removeOrphans, type HeldWork } from "./reconcile.js";
import { RuntimeLogs } from "./runtime-logs.js";
import { removeServiceResources } from "./service-removal.js";
import { settleSwap } from "./settle.js";
import type { ReplacedDeployment } from "./swap.js";

const log = createLogger("runner:agent");

export type Send = (frame: RunnerFrame) => void;

export type RunJob = (job: Job, io: DeploymentIO) => Promise<DeploymentResult>;

export interface AgentOptions {
  /** How many jobs may run at once. */
  capacity: number;
  /** The runner's version, reported in `hello`. */
  version: string;
  docker: DockerClient;
  /** Lets jobs clone file:// repositories from this host's disk. */
  allowFileRepos?: boolean;
  /** Runs one job; `runDeployment` unless a test supplies its own. */
  runJob?: RunJob;
  /** How long a log line may wait to be batched with others. */
  flushIntervalMs?: number;
  /**
   * This runner's mark on what it creates (reconcile.ts). Without it the
   * runner reports no inventory and removes no orphans: it could not tell
   * its own leftovers from another runner's work on the same engine.
   */
  runnerMark?: string;
}

/** How long `hello` waits for Docker to list the inventory. */
const inventoryTimeoutMs = 5_000;

interface HeldJob {
  job: Job;
  /** reserved: accepted, waiting for `job.start`; running: working on it. */
  state: "reserved" | "running";
  controller: AbortController;
  /** Settles when a running job has ended and cleaned up. */
  work?: Promise<void>;
}

/** A job that went live, waiting for the control plane to answer its result. */
interface UnsettledSwap {
  job: Job;
  replaced: ReplacedDeployment | null;
}

export class Agent {
  readonly #options: Required<Omit<AgentOptions, "runnerMark">> & AgentOptions;
  readonly #jobs = new Map<string, HeldJob>();
  /** By lease id. */
  readonly #swaps = new Map<string, UnsettledSwap>();
  readonly #outbox = new Outbox();
  /** Every job (forgotten ones included) and settle still working, for shutdown. */
  readonly #working = new Set<Promise<void>>();
  /** Deleted services being removed, by service id; a repeated request waits. */
  readonly #removals = new Map<string, Promise<void>>();
  /** Set while a connection is open. */
  #send: Send | null = null;
  #runtimeLogs: RuntimeLogs;
  /** Lines and results go out only after `welcome` has settled the leases. */
  #welcomed = false;
  #heartbeat: ReturnType<typeof setInterval> | undefined;
  #flushTimer: ReturnType<typeof setTimeout> | undefined;
  /** Why Docker is unusable, or null while it answers. */
  #dockerProblem: string | null = null;
  #stopping = false;

  constructor(options: AgentOptions) {
    this.#options = {
      runJob: runDeployment,
      flushIntervalMs: 100,
      allowFileRepos: false,
      ...options,
    };
    this.#runtimeLogs = new RuntimeLogs(options.docker, (frame) => this.#send?.(frame));
  }

  /** Pings Docker; returns (and logs, when it changes) what is wrong, if anything. */
  async checkDocker(): Promise<string | null> {
    let problem: string | null = null;
    try {
      await this.#options.docker.ping();
    } catch (error) {
      problem = errorMessage(error);
    }
    if (problem && problem !== this.#dockerProblem) log.error(problem);
    if (!problem && this.#dockerProblem) log.info("Docker is reachable again");
    this.#dockerProblem = problem;
    return problem;
  }

  /**
   * A connection opened: introduce the runner, the leases it holds and the
   * deployments its Docker holds anything of.
   */
  connected(send: Send): void {
    this.#send = send;
    this.#welcomed = false;
    this.#outbox.rewind();
    void this.#inventory().then((inventory) => {
      // The connection may have gone (or been replaced) meanwhile.
      if (this.#send !== send) return;
      const { capacity, version } = this.#options;
      send({
        type: "hello",
        protocol: PROTOCOL_VERSION,
        version,
        capacity,
        leases: this.#held(),
        inventory,
      });
    });
  }

  /** Deployment ids Docker holds of ours; none when Docker does not answer in time. */
  async #inventory(): Promise<string[]> {
    const mark = this.#options.runnerMark;
    if (!mark) return [];
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`Docker did not answer within ${inventoryTimeoutMs} ms`)),
        inventoryTimeoutMs,
      );
    });
    try {
      return await Promise.race([listInventory(this.#options.docker, mark), timeout]);
    } catch (error) {
      log.warn("Could not list what Docker holds; reporting no inventory", {
        error: errorMessage(error),
      });
      return [];
    } finally {
      clearTimeout(timer);
    }
  }

  /** The connection is gone; jobs carry on and their output waits. */
  disconnected(): void {
    this.#send = null;
    // The control plane ends every runtime-log stream when the socket goes.
    this.#runtimeLogs.stopAll();
    this.#welcomed = false;
    clearInterval(this.#heartbeat);
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    // An accepted job whose start never arrived is void: the control plane
    // withdraws offers the runner does not list in its next `hello`.
    for (const [leaseId, held] of this.#jobs) {
      if (held.state === "reserved") this.#jobs.delete(leaseId);
    }
  }

  received(frame: WorkerFrame): void {
    switch (frame.type) {
      case "welcome":
        return this.#welcome(frame);
      case "job.offer":
        return this.#offer(frame.job);
      case "job.start":
        return this.#start(frame);
      case "job.cancel":
      case "job.abort":
        return this.#stop(frame, frame.type);
      case "logs.ack":
        this.#outbox.ackLines(frame.leaseId, frame.seq);
        return this.#forgetIfSettled(frame.leaseId);
      case "job.result.ack":
        return this.#resultAcked(frame);
      case "runtime.follow":
        return this.#runtimeLogs.follow(frame.serviceId, frame.tail);
      case "runtime.unfollow":
        return this.#runtimeLogs.unfollow(frame.serviceId);
      case "service.remove":
        return this.#removeService(frame.serviceId);
    }
  }

  /**
   * Aborts every job and waits (at most `timeoutMs`) for them to clean up,
   * then hands out their last lines and results.
   */
  async shutdown(timeoutMs = 10_000): Promise<void> {
    this.#stopping = true;
    this.#runtimeLogs.stopAll();
    for (const [leaseId, held] of this.#jobs) {
      if (held.state === "reserved") this.#jobs.delete(leaseId);
      else held.controller.abort(new Error("The runner is shutting down"));
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>(
      (resolve) => (timer = setTimeout(resolve, timeoutMs)),
    );
    await Promise.race([Promise.allSettled([...this.#working]), timeout]);
    clearTimeout(timer);
    if (this.#working.size > 0) log.warn("Stopped waiting for jobs to clean up");
    this.#flush();
    clearInterval(this.#heartbeat);
  }

  /** Jobs that are running, and leases the runner still owes lines or a result. */
  #held(): LeaseRef[] {
    const leases = new Map<string, LeaseRef>();
    for (const { job, state } of this.#jobs.values()) {
      if (state === "running") leases.set(job.leaseId, job);
    }
    for (const ref of this.#outbox.leases()) leases.set(ref.leaseId, ref);
    return [...leases.values()].map(({ deploymentId, leaseId }) => ({
      deploymentId,
      leaseId,
    }));
  }

  #welcome(frame: Extract<WorkerFrame, { type: "welcome" }>): void {
    const orphans = new Set(frame.orphanDeploymentIds);
    const settling: Promise<void>[] = [];
    for (const leaseId of frame.unknownLeaseIds) {
      const swap = this.#swaps.get(leaseId);
      if (swap) {
        // The control plane dropped the lease of a job that went live: it
        // recorded the result and the ack was lost, or the lease lapsed
        // first. The orphan list, from this hello's inventory, tells which.
        const { deploymentId } = swap.job;
        const lapsed = orphans.has(deploymentId);
        orphans.delete(deploymentId);
        settling.push(this.#settle(leaseId, !lapsed));
      }
      this.#forget(leaseId);
    }
    this.#welcomed = true;
    log.info("Welcomed by the control plane", { runner: frame.runnerId });
    this.#flush();

    const mark = this.#options.runnerMark;
    if (mark && orphans.size > 0) {
      const work = Promise.all(settling)
        .then(() =>
          removeOrphans(this.#options.docker, mark, [...orphans], () => this.#heldWork()),
        )
        .finally(() => this.#working.delete(work));
      this.#working.add(work);
    }

    clearInterval(this.#heartbeat);
    this.#heartbeat = setInterval(() => {
      const leaseIds = this.#held().map((lease) => lease.leaseId);
      this.#send?.({ type: "heartbeat", leaseIds });
    }, frame.heartbeatIntervalMs);
  }

  /** The control plane no longer knows the lease: stop it and owe nothing for it. */
  #forget(leaseId: string): void {
    const held = this.#jobs.get(leaseId);
    this.#jobs.delete(leaseId);
    this.#outbox.forget(leaseId);
    this.#swaps.delete(leaseId);
    if (held?.state === "running") {
      log.warn("The control plane no longer knows this job; aborting it", {
        deployment: held.job.deploymentId,
      });
      held.controller.abort(new Error("The lease is no longer valid"));
    }
  }

  #offer(job: Job): void {
    const ref = { deploymentId: job.deploymentId, leaseId: job.leaseId };
    if (this.#jobs.has(job.leaseId)) return this.#reply({ type: "job.accept", ...ref });

    if (this.#stopping) {
      return this.#reply({
        type: "job.reject",
        ...ref,
        reason: "The runner is shutting down",
      });
    }
    if (this.#jobs.size >= this.#options.capacity) {
      const reason = `All ${this.#options.capacity} job slots are busy`;
      return this.#reply({ type: "job.reject", ...ref, reason });
    }

    const held: HeldJob = { job, state: "reserved", controller: new AbortController() };
    this.#jobs.set(job.leaseId, held);
    if (this.#dockerProblem === null) return this.#reply({ type: "job.accept", ...ref });

    // Docker was down; it may be back (dockerd started after the runner).
    void this.checkDocker().then((problem) => {
      if (this.#jobs.get(job.leaseId) !== held) return;
      if (problem === null) return this.#reply({ type: "job.accept", ...ref });
      this.#jobs.delete(job.leaseId);
      this.#reply({ type: "job.reject", ...ref, reason: problem });
    });
  }

  #start(ref: LeaseRef): void {
    const held = this.#jobs.get(ref.leaseId);
    if (!held || held.job.deploymentId !== ref.deploymentId) {
      log.warn("Ignored a start for a job the runner does not hold", { ...ref });
      return;
    }
    if (held.state === "running") return;
    held.state = "running";
    this.#outbox.open(ref);
    log.info("Job started", { deployment: ref.deploymentId, lease: ref.leaseId });

    const work = this.#run(held).finally(() => this.#working.delete(work));
    this.#working.add(work);
    held.work = work;
  }

  async #run(held: HeldJob): Promise<void> {
    const { job } = held;
    const ref = { deploymentId: job.deploymentId, leaseId: job.leaseId };
    // A job the control plane forgot may still be cleaning up; it owes nothing.
    const current = () => this.#jobs.get(job.leaseId) === held;

    let result: DeploymentResult;
    try {
      result = await this.#options.runJob(job, {
        docker: this.#options.docker,
        allowFileRepos: this.#options.allowFileRepos,
        runnerMark: this.#options.runnerMark,
        signal: held.controller.signal,
        log: (line, stream) => {
          if (!current()) return;
          this.#outbox.append(job.leaseId, line, stream, new Date());
          this.#scheduleFlush();
        },
        phase: (phase, commitSha) => {
          if (!current()) return;
          // Lines written before the phase change go out first.
          this.#flush();
          if (this.#welcomed)
            this.#send?.({ type: "job.phase", ...ref, phase, commitSha });
        },
      });
    } catch (error) {
      // runDeployment never rejects; this is a bug, reported as the reason.
      const reason = `The runner failed: ${errorMessage(error)}`;
      log.error("Job crashed", { deployment: job.deploymentId, error });
      if (current()) this.#outbox.append(job.leaseId, reason, "stderr", new Date());
      result = { outcome: "failed", commitSha: null, reason };
    }

    log.info(`Job ${result.outcome}`, {
      deployment: job.deploymentId,
      reason: result.reason,
    });
    const swap = { job, replaced: result.replaced ?? null };
    if (!current()) {
      // The lease was dropped while the swap finished: the deployment failed
      // (lease lost) with no result recorded, so nothing may stay live.
      if (result.outcome === "running") {
        this.#swaps.set(job.leaseId, swap);
        void this.#settle(job.leaseId, false);
      }
      return;
    }
    this.#jobs.delete(job.leaseId);
    if (result.outcome === "running") this.#swaps.set(job.leaseId, swap);
    this.#outbox.finish(job.leaseId, {
      outcome: result.outcome,
      commitSha: result.commitSha,
      reason: result.reason,
    });
    this.#flush();
  }

  /** `job.cancel` (an offer voided) and `job.abort` (stop the work). */
  #stop(ref: LeaseRef, type: "job.cancel" | "job.abort"): void {
    const held = this.#jobs.get(ref.leaseId);
    if (!held) return;
    if (held.state === "reserved") {
      this.#jobs.delete(ref.leaseId);
      return;
    }
    if (type === "job.cancel")
      log.warn("Cancel for a started job; aborting it", { ...ref });
    log.info("Aborting job", { deployment: ref.deploymentId });
    held.controller.abort(new Error("Aborted by the control plane"));
  }

  /**
   * The service was deleted: abort its jobs, stop following its output,
   * remove its containers and images, then confirm. The control plane asks
   * until it hears `service.removed`, so a failure only logs; a request
   * repeated while a removal runs is answered when that one ends.
   */
  #removeService(serviceId: string): void {
    if (this.#removals.has(serviceId)) return;
    const ending: Promise<void>[] = [];
    for (const [leaseId, held] of this.#jobs) {
      if (held.job.serviceId !== serviceId) continue;
      if (held.state === "reserved") {
        this.#jobs.delete(leaseId);
        continue;
      }
      log.info("Aborting a job of a deleted service", {
        deployment: held.job.deploymentId,
      });
      held.controller.abort(new Error("The service was deleted"));
      if (held.work) ending.push(held.work);
    }
    this.#runtimeLogs.unfollow(serviceId);

    const work = (async () => {
      this.#dropSwaps(serviceId);
      // An aborted job removes what it made, or rolls its swap back, first.
      await Promise.allSettled(ending);
      // A job that ended live meanwhile left a swap; the service is gone.
      this.#dropSwaps(serviceId);
      const removed = await removeServiceResources(
        this.#options.docker,
        serviceId,
        this.#options.runnerMark,
      );
      log.info("Removed the deleted service", {
        service: serviceId,
        removed: removed.length,
      });
      this.#send?.({ type: "service.removed", serviceId });
    })()
      .catch((error: unknown) => {
        log.error(
          "Could not remove a deleted service; the control plane will ask again",
          {
            service: serviceId,
            error: errorMessage(error),
          },
        );
      })
      .finally(() => {
        this.#removals.delete(serviceId);
        this.#working.delete(work);
      });
    this.#removals.set(serviceId, work);
    this.#working.add(work);
  }

  /** Forgets the unsettled swaps of a service, so no settle recreates what goes. */
  #dropSwaps(serviceId: string): void {
    for (const [leaseId, swap] of this.#swaps) {
      if (swap.job.serviceId === serviceId) this.#swaps.delete(leaseId);
    }
  }

  #resultAcked(frame: Extract<WorkerFrame, { type: "job.result.ack" }>): void {
    this.#outbox.ackResult(frame.leaseId);
    void this.#settle(frame.leaseId, frame.accepted);
    this.#forgetIfSettled(frame.leaseId);
  }

  /**
   * Finishes (`accepted`) or undoes the swap of a job that went live, if it
   * left one; shutdown waits for it.
   */
  #settle(leaseId: string, accepted: boolean): Promise<void> {
    const swap = this.#swaps.get(leaseId);
    if (!swap) return Promise.resolve();
    this.#swaps.delete(leaseId);
    if (!accepted) {
      log.warn("The control plane refused a live result; rolling the swap back", {
        deployment: swap.job.deploymentId,
      });
    }
    const work = settleSwap(
      {
        docker: this.#options.docker,
        job: swap.job,
        replaced: swap.replaced,
        runnerMark: this.#options.runnerMark,
      },
      accepted,
    ).finally(() => this.#working.delete(work));
    this.#working.add(work);
    return work;
  }

  /** What orphan removal must leave alone. */
  #heldWork(): HeldWork {
    const work: HeldWork = { deploymentIds: new Set(), imageTags: new Set() };
    for (const { job } of [...this.#jobs.values(), ...this.#swaps.values()]) {
      work.deploymentIds.add(job.deploymentId);
      work.imageTags.add(job.imageTag);
    }
    return work;
  }

  #forgetIfSettled(leaseId: string): void {
    if (!this.#jobs.has(leaseId) && this.#outbox.isSettled(leaseId)) {
      this.#outbox.forget(leaseId);
    }
  }

  #reply(frame: RunnerFrame): void {
    this.#send?.(frame);
  }

  /** Sends now when a frame's worth of lines waits, else within the interval. */
  #scheduleFlush(): void {
    if (this.#outbox.unsentLines() >= maxLinesPerFrame) return this.#flush();
    this.#flushTimer ??= setTimeout(() => this.#flush(), this.#options.flushIntervalMs);
  }

  #flush(): void {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    if (!this.#send || !this.#welcomed) return;
    for (const frame of this.#outbox.drain()) this.#send(frame);
  }
}
