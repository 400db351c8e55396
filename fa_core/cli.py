"""The ``fa-core`` command line (also ``python -m fa_core``).

``fa-core simulate`` runs a :class:`fa_core.Population` of one builtin model in
a vectorised environment and reports throughput, memory per agent and what the
agents did, beside what the same run would cost with pymdp's numpy Agent when
pymdp is installed. ``--json PATH`` writes the summary for scripts and
``--plot PATH`` a PNG of the run (matplotlib, imported only then).

Errors a user can fix (Ray missing, a cluster out of reach, matplotlib missing)
end the program with one line on stderr and exit code 2, as argparse does for
bad options; warnings go through :mod:`logging` on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence

import numpy as np

import fa_core
from fa_core import builtin_models
from fa_core.envs import GridWorld, ModelWorld, TMaze
from fa_core.model import GenerativeModel
from fa_core.population import Population, default_threads

__all__ = ["CLIError", "ENVS", "build_parser", "main", "make_env", "run", "simulate",
           "summary_json"]

log = logging.getLogger("fa_core.cli")

#: Environment factory per builtin model name: (model, n_agents, rng) -> environment.
ENVS: dict[str, Callable] = {
    "grid10": lambda gm, n, rng: GridWorld(10, n, seed=rng),
    "grid30": lambda gm, n, rng: GridWorld(30, n, seed=rng),
    # the world draws the confused cue from the model's own A
    "grid30_confused": lambda gm, n, rng: ModelWorld(gm, n, seed=rng),
    "tmaze": lambda gm, n, rng: TMaze(n, seed=rng),
    "tmaze_dense": lambda gm, n, rng: ModelWorld(gm, n, seed=rng),
    "four_factor": lambda gm, n, rng: ModelWorld(gm, n, seed=rng),
}

#: What one model's agents live in, for ``--help``.
_MODEL_HELP = ("grid10 / grid30: foragers on a 10x10 / 30x30 grid looking for food; "
               "grid30_confused: the same on 30x30, with a location cue that names a "
               "neighbouring cell one time in five; tmaze: the classic T-maze; "
               "tmaze_dense: the T-maze's sizes with dense random A and B, in the world "
               "they describe; four_factor: four factors of 5 states, 81 two-step "
               "policies, in the world its own A and B describe")

#: The default run: 1,000,000 agent-steps, about 5 s of stepping on two cores.
DEFAULTS = {"model": "grid10", "agents": 10_000, "steps": 100}


class CLIError(Exception):
    """A problem the user can fix; ``main`` prints its message on one line and exits with 2."""


def make_env(model: str, gm: GenerativeModel, n_agents: int, rng):
    """The environment matching builtin model ``model`` for ``n_agents`` agents.

    Parameters
    ----------
    model : str
        A name of :data:`fa_core.builtin_models.MODELS`.
    gm : GenerativeModel
        The model built from it (used by worlds that follow the model itself).
    n_agents : int
        Number of agents.
    rng : numpy.random.Generator
        The environment's randomness.

    Returns
    -------
    GridWorld, TMaze or ModelWorld
    """
    return ENVS[model](gm, n_agents, rng)


def _rss_bytes() -> tuple[int, str]:
    """Resident set size of this process, and what kind of figure it is."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"), "current"
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return 0, "unavailable"
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024), "peak"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _fmt_seconds(s: float) -> str:
    if s < 1:
        return f"{s:.2f} s"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


class _Tally:
    """What the agents did, gathered step by step (grids: where food was first found)."""

    def __init__(self, env):
        self.env = env
        self.first_found = (np.zeros(env.size * env.size, dtype=np.int64)
                            if isinstance(env, GridWorld) else None)

    def __call__(self, found_before: np.ndarray | None) -> None:
        if self.first_found is not None:
            new = self.env.found & ~found_before
            self.first_found += np.bincount(self.env.location[new],
                                            minlength=self.first_found.size)

    def figures(self) -> dict:
        """Behaviour figures of the run, as plain numbers."""
        env = self.env
        if isinstance(env, GridWorld):
            return {"found_food_fraction": float(env.found.mean()),
                    "mean_steps_on_food": float(env.food_steps.mean())}
        if isinstance(env, TMaze):
            return {"rewarded_fraction": float((env.rewards > 0).mean()),
                    "mean_rewards": float(env.rewards.mean()),
                    "mean_losses": float(env.losses.mean())}
        return {"mean_preference_per_step": float(env.utility.mean() / max(env.steps, 1))}

    def sentence(self) -> str:
        f = self.figures()
        if "found_food_fraction" in f:
            return (f"{f['found_food_fraction']:.0%} of agents found food "
                    f"(mean {f['mean_steps_on_food']:.2f} steps on food per agent)")
        if "rewarded_fraction" in f:
            return (f"{f['rewarded_fraction']:.0%} of agents got reward; per agent "
                    f"{f['mean_rewards']:.2f} rewards, {f['mean_losses']:.2f} losses")
        return (f"mean preference of the observed outcomes (the model's C, summed over "
                f"modalities) {f['mean_preference_per_step']:.3f} per agent-step")


def _pymdp_measure(model: str, max_steps: int, timing_budget_s: float, queue) -> None:
    """In a child process: the figures of :func:`pymdp_estimate`, put on ``queue``.

    Messages: ``("version", str)``, ``("stepping", time.time())`` before the first pymdp
    step (so a parent that stops waiting knows a step was under way), then
    ``("done", dict)`` or ``("error", str)``.
    """
    try:
        import warnings
        from importlib.metadata import version

        from pymdp.legacy.agent import Agent as PymdpAgent

        from fa_core.memory import retained_bytes

        try:
            queue.put(("version", version("inferactively-pymdp")))
        except Exception:  # installed from a checkout without metadata
            queue.put(("version", "unknown"))
        obs = [0] * len(builtin_models.get(model)["A"])

        def stepped(arrays):
            agent = PymdpAgent(**arrays)
            agent.infer_states(obs)
            agent.infer_policies()
            agent.sample_action()
            return agent

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymdp's deprecation chatter is not the user's
            model_bytes = retained_bytes(lambda: builtin_models.get(model))
            shared = builtin_models.get(model)
            queue.put(("stepping", time.time()))
            t0 = time.perf_counter()
            stepped(shared)  # pymdp's first-call costs (imports, caches) are not an agent's
            first = time.perf_counter() - t0
            per_agent = retained_bytes(lambda: stepped(shared), count=2)
            own = retained_bytes(lambda: stepped(builtin_models.get(model)))
            agent = stepped(shared)
            spent, timed = 0.0, 0
            while timed < max_steps and (timed == 0 or spent < timing_budget_s):
                t0 = time.perf_counter()
                agent.infer_states(obs)
                agent.infer_policies()
                agent.sample_action()
                spent += time.perf_counter() - t0
                timed += 1
        queue.put(("done", {"bytes_per_agent": float(per_agent),
                            "bytes_per_agent_own_model": float(own),
                            "model_bytes": float(model_bytes), "first_step_seconds": first,
                            "seconds_per_agent_step": spent / timed, "steps_timed": timed}))
    except BaseException as exc:  # reported by the parent, which owns the terminal
        queue.put(("error", f"{type(exc).__name__}: {exc}"))


def pymdp_estimate(model: str, n_agents: int, steps: int, max_steps: int = 5,
                   budget_s: float = 30.0) -> dict | None:
    """What this run would cost with pymdp's numpy Agent (``pymdp.legacy.agent.Agent``).

    Measured in a child process, stopped after ``budget_s`` seconds: pymdp takes about
    100 s for one agent-step of ``four_factor``, so a measurement that does not finish
    gives a lower bound instead. Memory is measured with tracemalloc on pymdp agents built
    and stepped once: agents given the same model arrays (pymdp keeps references to them,
    so this is its leanest use: ``bytes_per_agent``, plus the model once) and an agent
    built from its own copy of the model (``bytes_per_agent_own_model``). Time per
    agent-step is the mean of up to ``max_steps`` further steps of one agent (fewer once
    they take a sixth of the budget), extrapolated to ``n_agents * steps`` agent-steps in
    one process.

    Parameters
    ----------
    model : str
        A builtin model name.
    n_agents, steps : int
        The run to extrapolate to.
    max_steps : int
        Most pymdp steps timed (after the measured ones).
    budget_s : float
        Seconds the measurement may take in all (the child process included).

    Returns
    -------
    dict or None
        ``version``, ``timed_out``, ``bytes_per_agent``, ``bytes_per_agent_own_model``,
        ``model_bytes``, ``seconds_per_agent_step``, ``steps_timed``, and the whole run
        extrapolated: ``memory_bytes`` (shared arrays) and ``seconds``. When
        ``timed_out``, the memory figures are None and ``seconds_per_agent_step`` /
        ``seconds`` are lower bounds (None if no step had started). None when pymdp is
        not installed.

    Raises
    ------
    RuntimeError
        The measurement failed in the child process (its error in the message).
    """
    import importlib.util
    import multiprocessing
    import queue as queue_module

    if importlib.util.find_spec("pymdp") is None:
        return None
    ctx = multiprocessing.get_context("spawn")  # no fork of a process running OpenMP threads
    messages = ctx.Queue()
    child = ctx.Process(target=_pymdp_measure, daemon=True,
                        args=(model, max_steps, budget_s / 6, messages))
    deadline = time.monotonic() + budget_s
    child.start()
    got: dict = {}
    try:
        while "done" not in got and "error" not in got:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                kind, value = messages.get(timeout=min(remaining, 1.0))
            except queue_module.Empty:
                if not child.is_alive() and messages.empty():
                    got["error"] = f"the measuring process ended (exit code {child.exitcode})"
                continue
            got[kind] = value
    finally:
        if child.is_alive():
            child.terminate()
        child.join()
    if "error" in got:
        raise RuntimeError(f"pymdp measurement failed: {got['error']}")
    out = {"version": got.get("version", "unknown"), "timed_out": "done" not in got,
           "budget_s": float(budget_s)}
    if "done" in got:
        f = got["done"]
        out.update(f)
        out["memory_bytes"] = f["bytes_per_agent"] * n_agents + f["model_bytes"]
        out["seconds"] = f["seconds_per_agent_step"] * n_agents * steps
        return out
    at_least = time.time() - got["stepping"] if "stepping" in got else None
    out.update({"bytes_per_agent": None, "bytes_per_agent_own_model": None,
                "model_bytes": None, "first_step_seconds": None,
                "seconds_per_agent_step": at_least, "steps_timed": 0, "memory_bytes": None,
                "seconds": None if at_least is None else at_least * n_agents * steps})
    return out


def _pymdp_sentences(pymdp: dict | None, n_agents: int, steps: int,
                     agent_bytes: float | None, fa_seconds: float | None) -> str:
    """The report's lines on :func:`pymdp_estimate`'s figures."""
    if pymdp is None:
        return "pymdp: not installed or not measured, no comparison"
    head = f"pymdp {pymdp['version']} (numpy Agent, one process), the same run: "
    if pymdp["timed_out"]:
        if pymdp["seconds_per_agent_step"] is None:
            return (head + f"not measured (pymdp did not load within the "
                    f"{pymdp['budget_s']:.0f} s budget, --pymdp-budget)")
        return (head + f"one agent-step takes more than {pymdp['seconds_per_agent_step']:.0f} s "
                f"(stopped at the {pymdp['budget_s']:.0f} s budget, --pymdp-budget), so more "
                f"than {_fmt_seconds(pymdp['seconds'])} for {n_agents * steps:,} agent-steps")
    lines = [head + f"{_fmt_bytes(pymdp['bytes_per_agent'])} per agent sharing the model's "
             f"arrays ({_fmt_bytes(pymdp['bytes_per_agent_own_model'])} with its own copy), "
             f"{_fmt_bytes(pymdp['memory_bytes'])} in all; "
             f"{pymdp['seconds_per_agent_step'] * 1e3:.2f} ms per agent-step, so about "
             f"{_fmt_seconds(pymdp['seconds'])} for {n_agents * steps:,} agent-steps (timed on "
             f"{pymdp['steps_timed']} step(s) of one agent)"]
    parts = []
    if agent_bytes is not None and agent_bytes > 0 and pymdp["bytes_per_agent"]:
        parts.append(_compare(pymdp["bytes_per_agent"] / (agent_bytes / n_agents),
                              "less memory per agent", "more memory per agent",
                              "about the same memory per agent"))
    if fa_seconds and pymdp["seconds"]:
        parts.append(_compare(pymdp["seconds"] / fa_seconds, "faster", "slower",
                              "about as fast") +
                     f" ({_fmt_seconds(fa_seconds)} against {_fmt_seconds(pymdp['seconds'])})")
    if parts:
        lines.append("fa_core against pymdp: " + ", ".join(parts))
    return "\n".join(lines)


def _compare(ratio: float, better: str, worse: str, same: str) -> str:
    """``"12x better"``, ``"1.5x worse"`` (the inverse ratio) or ``same`` within 5 %: a ratio
    never rounds to 0x or reads the wrong way round."""
    if ratio >= 1.05:
        return f"{_fmt_ratio(ratio)} {better}"
    if ratio <= 1 / 1.05:
        return f"{_fmt_ratio(1 / ratio)} {worse}"
    return same


def _fmt_ratio(r: float) -> str:
    """A ratio >= 1 with the digits that mean something: 1.3x, 12x, 1,234x."""
    return f"{r:.1f}x" if r < 10 else f"{r:,.0f}x"


# -- Ray -------------------------------------------------------------------------------------

def _ray_address_for_auto() -> str | None:
    """The address ``ray.init(address="auto")`` would use: ``RAY_ADDRESS``, else the file
    ``ray start`` leaves in the temporary directory, else None."""
    env = os.environ.get("RAY_ADDRESS", "").strip()
    if env and env != "auto":
        return env
    import tempfile
    for base in dict.fromkeys(["/tmp", tempfile.gettempdir()]):
        try:
            with open(os.path.join(base, "ray", "ray_current_cluster")) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text:
            return text
    return None


def check_reachable(address: str, timeout: float = 3.0) -> str:
    """Resolve a Ray ``--address`` and check that something listens there.

    Ray itself retries an unreachable address for a minute and then fails with a long
    traceback; a TCP connection attempt answers in milliseconds.

    Parameters
    ----------
    address : str
        ``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:PORT"``.
    timeout : float
        Seconds to wait for the connection.

    Returns
    -------
    str
        The address to give ``ray.init``.

    Raises
    ------
    CLIError
        No cluster found for ``auto``, a malformed address, or nothing listening there.
    """
    target = address
    if address == "auto":
        target = _ray_address_for_auto()
        if target is None:
            raise CLIError("--address auto: no running Ray cluster found on this machine "
                           "(start one with 'ray start --head', or drop --address)")
    hostport = target.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise CLIError(f"--address {address}: expected HOST:PORT or 'auto', got {target!r}")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CLIError(f"--address {address}: cannot reach a Ray cluster at {hostport} "
                       f"({reason})") from None
    return address


def _start_ray(workers: int | None, address: str | None) -> None:
    """Start (or join) Ray for a sharded run, or raise CLIError saying why not."""
    if address is not None:
        address = check_reachable(address)
    try:
        import ray
    except ImportError:
        flag = "--workers" if workers is not None else "--address"
        raise CLIError(f"{flag} needs Ray, which is not installed: "
                       f"pip install 'fa_core[ray]'") from None
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, num_cpus=None if address else workers,
                 include_dashboard=False, logging_level="ERROR")
    except Exception as exc:  # ConnectionError, RuntimeError, ...: Ray's own words, one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"Ray could not start{' at ' + address if address else ''}: "
                       f"{first}") from None


# -- the run ---------------------------------------------------------------------------------

def simulate(model: str = DEFAULTS["model"], n_agents: int = DEFAULTS["agents"],
             steps: int = DEFAULTS["steps"], seed: int = 0, threads: int | None = None,
             out=sys.stdout, workers: int | None = None, address: str | None = None, *,
             progress: bool = False, compare_pymdp: bool = False,
             pymdp_budget_s: float = 30.0) -> dict:
    """Run a population of a builtin model for ``steps`` steps and report on ``out``.

    With ``workers`` or ``address`` the population is a
    :class:`fa_core.distributed.ShardedPopulation` on Ray: a local cluster of
    ``workers`` CPUs, or the running cluster at ``address`` (``"auto"`` finds
    it), one shard per worker CPU (``threads`` CPUs per shard). Same seed,
    same run as in one process.

    Memory is measured with :mod:`tracemalloc` while the model and the
    population are built and take their first step (so every per-agent buffer
    exists), each part on its own: the shared model, what the agents own (their
    build and first step) and the world they live in (its build and first step:
    a :class:`~fa_core.envs.ModelWorld` keeps float64 copies of ``A`` and ``B``);
    throughput is timed over the remaining steps, untraced.

    Parameters
    ----------
    model : str
        A builtin model (:data:`ENVS` lists them).
    n_agents, steps : int
        Number of agents and of time steps (at least 1 each).
    seed : int
        Seeds the environment and the agents.
    threads : int, optional
        Threads stepping the agents (default: all cores available); with Ray, per shard.
    out : text stream
        Where the report goes.
    workers : int, optional
        Run on a local Ray cluster of this many CPUs.
    address : str, optional
        Run on the Ray cluster at this address.
    progress : bool
        Show a tqdm progress bar (agent-steps, rate and ETA) on stderr.
    compare_pymdp : bool
        Also estimate the same run with pymdp's numpy Agent (:func:`pymdp_estimate`),
        when pymdp is installed.
    pymdp_budget_s : float
        Seconds the pymdp measurement may take.

    Returns
    -------
    dict
        The figures (``agent_steps_per_s`` None if ``steps == 1``; ``bytes_per_agent``
        None on Ray; ``model_bytes``, ``world_bytes``, ``rss_bytes``, ``threads``,
        ``seconds``, ``step_rates``, ``behaviour``, ``pymdp``), and the objects of the
        run: the ``population``, the environment ``env`` and the grid's ``first_found``
        counts.

    Raises
    ------
    CLIError
        Ray missing or a cluster out of reach.

    Examples
    --------
    >>> import io
    >>> r = simulate("tmaze", 16, 3, out=io.StringIO())
    >>> sorted(r["behaviour"])
    ['mean_losses', 'mean_rewards', 'rewarded_fraction']
    """
    if model not in ENVS:
        raise ValueError(f"model: unknown model {model!r}; choose one of {sorted(ENVS)}")
    env_seed, pop_seed = np.random.SeedSequence(seed).spawn(2)
    arrays = builtin_models.get(model)
    sharded = workers is not None or address is not None
    cores = default_threads()
    if sharded:  # started before tracing: Ray's own allocations are not the agents'
        _start_ray(workers, address)
        threads = threads or 1
        where = (f"Ray cluster {address or 'local'}, {workers or 'all'} worker CPU(s), "
                 f"{threads} per shard")
    else:
        threads = cores if threads is None else threads
        where = f"{threads} thread(s)"
    if threads > cores:
        log.warning("%d threads on %d core(s): threads will share cores and run slower "
                    "(use --threads %d or fewer)", threads, cores, cores)

    print(f"fa_core {fa_core.__version__} simulate: {model}, {n_agents:,} agents, {steps} "
          f"steps, seed {seed}, {where}", file=out)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=n_agents * steps, unit="agent-step", unit_scale=True,
                   file=sys.stderr, desc=model, dynamic_ncols=True, leave=True)
    try:
        tracemalloc.start()
        try:
            # each part's bytes from the traced total before and after it: the model, the
            # agents (their build and first step) and the world (its arrays, e.g. a
            # ModelWorld's float64 copy of A and B, and its steps), so the agents' figure
            # holds only what they own
            def traced() -> int:
                return tracemalloc.get_traced_memory()[0]

            t0 = time.perf_counter()
            mark = traced()
            gm = GenerativeModel(**arrays)
            model_bytes = traced() - mark
            mark = traced()
            if sharded:
                from fa_core.distributed import ShardedPopulation
                pop = ShardedPopulation(gm, n_agents, seed=pop_seed, cpus_per_shard=threads,
                                        n_shards=None if workers is None
                                        else workers // threads or 1)
            else:
                pop = Population(gm, n_agents, seed=pop_seed, n_threads=threads)
            agent_bytes = traced() - mark
            mark = traced()
            env = make_env(model, gm, n_agents, np.random.default_rng(env_seed))
            tally = _Tally(env)
            t_build = time.perf_counter() - t0
            print(f"  {gm!r}; population built in {t_build:.2f} s (traced)", file=out)
            obs = env.reset()
            before = env.found.copy() if tally.first_found is not None else None
            world_bytes = traced() - mark
            mark = traced()
            actions = pop.step(obs)
            agent_bytes += traced() - mark
            mark = traced()
            obs = env.step(actions)
            tally(before)
            del actions, before
            world_bytes += traced() - mark
        finally:
            tracemalloc.stop()
        if bar is not None:
            bar.update(n_agents)

        def after_step(k: int) -> None:
            if bar is not None:
                bar.update(n_agents)

        elapsed, step_seconds = run(pop, env, obs, steps - 1, after_step, tally)
    finally:
        if bar is not None:
            bar.close()

    rate = n_agents * (steps - 1) / elapsed if steps > 1 and elapsed > 0 else None
    rss, rss_kind = _rss_bytes()
    if rate is None:
        print("throughput: n/a (needs --steps >= 2; the first step is traced for memory)",
              file=out)
    else:
        print(f"throughput: {rate:,.0f} agent-steps/s ({n_agents * (steps - 1):,} agent-steps "
              f"in {elapsed:.2f} s, steps 2-{steps})", file=out)
    world = f"the world ({type(env).__name__}) {_fmt_bytes(world_bytes)}"
    if sharded:  # the agents live in the shards' processes, out of tracemalloc's sight
        agent_bytes = None
        print(f"memory: agents live in {pop.n_shards} Ray shard(s) {pop.shard_sizes}; "
              f"shared model {_fmt_bytes(model_bytes)}, {world}, driver RSS "
              f"{_fmt_bytes(rss)} ({rss_kind})", file=out)
    else:
        print(f"memory: {_fmt_bytes(agent_bytes / n_agents)} per agent (tracemalloc: what "
              f"the agents own), shared model {_fmt_bytes(model_bytes)}, {world}, process "
              f"RSS {_fmt_bytes(rss)} ({rss_kind})", file=out)
    print(f"behaviour: {tally.sentence()}", file=out)

    pymdp = None
    if compare_pymdp:
        try:
            pymdp = pymdp_estimate(model, n_agents, steps, budget_s=pymdp_budget_s)
        except RuntimeError as exc:  # pymdp's own failure: the run itself is fine
            log.warning("%s", exc)
        print(_pymdp_sentences(pymdp, n_agents, steps, agent_bytes,
                               elapsed * steps / max(steps - 1, 1) if rate is not None
                               else None), file=out)

    return {"model": model, "agents": n_agents, "steps": steps, "seed": seed,
            "threads": threads, "workers": workers, "address": address,
            "agent_steps_per_s": rate, "seconds": elapsed,
            "bytes_per_agent": None if agent_bytes is None else agent_bytes / n_agents,
            "model_bytes": model_bytes, "world_bytes": world_bytes, "rss_bytes": rss,
            "step_rates":
            [n_agents / s if s > 0 else None for s in step_seconds],
            "behaviour": tally.figures(), "pymdp": pymdp,
            "population": pop, "env": env, "first_found": tally.first_found}


def run(pop, env, obs: np.ndarray, steps: int, progress: Callable[[int], None] | None = None,
        tally: Callable | None = None) -> tuple[float, list[float]]:
    """Step ``pop`` and ``env`` together ``steps`` times from ``obs``.

    Parameters
    ----------
    pop : Population or ShardedPopulation
    env : environment with ``step(actions) -> obs``
    obs : ndarray
        The first observations.
    steps : int
        Number of steps.
    progress : callable, optional
        Called with the step number (1-based) after each step.
    tally : callable, optional
        Called after each step with the grid's ``found`` before it (or None).

    Returns
    -------
    (float, list of float)
        Seconds spent stepping the agents and the environment, and the seconds of each
        step (the agents' part only).
    """
    grid = isinstance(env, GridWorld) and tally is not None
    per_step = []
    t0 = time.perf_counter()
    for k in range(1, steps + 1):
        s = time.perf_counter()
        actions = pop.step(obs)
        per_step.append(time.perf_counter() - s)
        before = env.found.copy() if grid else None
        obs = env.step(actions)
        if tally is not None:
            tally(before)
        if progress is not None:
            progress(k)
    return time.perf_counter() - t0, per_step


def summary_json(result: dict) -> dict:
    """The JSON-ready summary of a :func:`simulate` result (no objects, plain numbers).

    Keys: ``fa_core_version``, ``model``, ``agents``, ``steps``, ``seed``, ``threads``,
    ``workers``, ``address``, ``agent_steps_per_s``, ``seconds``, ``memory_per_agent_bytes``,
    ``model_bytes``, ``world_bytes``, ``rss_bytes``, ``step_agent_steps_per_s`` (per step
    after the first), ``behaviour`` (per model: e.g. ``found_food_fraction``) and ``pymdp``
    (the estimate of :func:`pymdp_estimate`, or None).
    """
    keys = ("model", "agents", "steps", "seed", "threads", "workers", "address",
            "agent_steps_per_s", "seconds")
    out = {"fa_core_version": fa_core.__version__}
    out.update({k: result[k] for k in keys})
    out["memory_per_agent_bytes"] = result["bytes_per_agent"]
    out["model_bytes"] = result["model_bytes"]
    out["world_bytes"] = result["world_bytes"]
    out["rss_bytes"] = result["rss_bytes"]
    out["step_agent_steps_per_s"] = result["step_rates"]
    out["behaviour"] = result["behaviour"]
    out["pymdp"] = result["pymdp"]
    return out


def write_plot(result: dict, path: str) -> None:
    """Write a PNG of a :func:`simulate` result to ``path``.

    Panels: for grids, where the agents are at the end and where each agent first found
    food (food cells outlined); for every model, agent-steps/s per step over the run and
    memory per agent (beside pymdp's, when it was measured).

    Raises
    ------
    CLIError
        matplotlib is not installed.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ImportError:
        raise CLIError("--plot needs matplotlib, which is not installed: "
                       "pip install 'fa_core[plot]'") from None
    env = result["env"]
    grid = isinstance(env, GridWorld)
    fig, axes = plt.subplots(1, 4 if grid else 2, figsize=(16 if grid else 9, 3.8),
                             layout="constrained")
    axes = list(np.atleast_1d(axes))
    if grid:
        size = env.size
        food = np.argwhere(env.food.reshape(size, size))
        for ax, counts, title in (
                (axes.pop(0), np.bincount(env.location, minlength=size * size),
                 f"where the {result['agents']:,} agents are after {result['steps']} steps"),
                (axes.pop(0), result["first_found"], "where agents first found food")):
            im = ax.imshow(counts.reshape(size, size), cmap="viridis", origin="upper")
            ax.scatter(food[:, 1], food[:, 0], s=60, facecolors="none", edgecolors="red",
                       linewidths=1.2, label="food")
            ax.set_title(title, fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, shrink=0.8, label="agents")
            ax.legend(loc="upper right", fontsize=7)
    ax = axes.pop(0)
    rates = [r for r in result["step_rates"]]
    if rates:
        ax.plot(range(2, len(rates) + 2), rates, marker="." if len(rates) < 30 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("agent-steps / s")
    ax.set_title(f"throughput ({result['threads']} thread(s))", fontsize=9)
    ax.set_ylim(bottom=0)
    ax = axes.pop(0)
    labels, values = [], []
    if result["bytes_per_agent"] is not None:
        labels.append("fa_core")
        values.append(result["bytes_per_agent"])
    if result["pymdp"] is not None and result["pymdp"]["bytes_per_agent"] is not None:
        labels.append("pymdp")
        values.append(result["pymdp"]["bytes_per_agent"])
    if values:
        bars = ax.bar(labels, values, color=["tab:blue", "tab:orange"][:len(values)])
        ax.bar_label(bars, labels=[_fmt_bytes(v) for v in values], fontsize=8)
        if len(values) > 1:
            ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "agents in Ray shards:\nnot measured here", ha="center",
                va="center", transform=ax.transAxes)
    ax.set_ylabel("bytes per agent")
    ax.set_title("memory per agent", fontsize=9)
    fig.suptitle(f"fa_core {fa_core.__version__}: {result['model']}, {result['agents']:,} "
                 f"agents, {result['steps']} steps", fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- argument parsing --------------------------------------------------------------------------

def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser(prog: str = "fa-core") -> argparse.ArgumentParser:
    """The argument parser of the command line (``simulate`` is its one command)."""
    parser = argparse.ArgumentParser(
        prog=prog, description="fa_core command line: compiled float32 active-inference agents.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {fa_core.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    sim = sub.add_parser(
        "simulate", help="run many agents of a builtin model in its environment",
        description="Run N agents sharing one generative model in a vectorised environment; "
                    "each step every agent infers states, infers policies and samples an "
                    "action. Reports agent-steps per second, memory per agent and what the "
                    "agents did, beside what the same run would cost in pymdp (when installed).")
    sim.add_argument("--model", choices=sorted(ENVS), default=DEFAULTS["model"],
                     help=_MODEL_HELP + " (default: %(default)s)")
    sim.add_argument("--agents", type=_int_at_least(1), default=DEFAULTS["agents"], metavar="N",
                     help="number of agents (default: %(default)s)")
    sim.add_argument("--steps", type=_int_at_least(1), default=DEFAULTS["steps"], metavar="T",
                     help="number of time steps (default: %(default)s)")
    sim.add_argument("--seed", type=_int_at_least(0), default=0, metavar="S",
                     help="seed of the environment and of every agent (default: %(default)s)")
    sim.add_argument("--threads", type=_int_at_least(1), default=None, metavar="K",
                     help="threads stepping the agents (default: all cores available; "
                          "with Ray: threads per shard, default 1)")
    sim.add_argument("--workers", type=_int_at_least(1), default=None, metavar="W",
                     help="run on a local Ray cluster of W worker CPUs, one shard each "
                          "(needs fa_core[ray]); same seed, same run")
    sim.add_argument("--address", default=None, metavar="ADDR",
                     help="run on the existing Ray cluster at ADDR (HOST:PORT, or 'auto': "
                          "the one this machine belongs to), one shard per cluster CPU "
                          "unless --workers")
    sim.add_argument("--json", default=None, metavar="PATH",
                     help="write the run's summary as JSON to PATH ('-': stdout)")
    sim.add_argument("--plot", default=None, metavar="PATH",
                     help="write a PNG of the run to PATH (needs matplotlib: fa_core[plot])")
    sim.add_argument("--no-pymdp", dest="pymdp", action="store_false",
                     help="skip the estimate of the same run with pymdp's numpy Agent")
    sim.add_argument("--pymdp-budget", type=_positive_float, default=30.0, metavar="SECONDS",
                     help="most seconds the pymdp estimate may take; a slower pymdp step "
                          "gives a lower bound (default: %(default)s)")
    sim.add_argument("--no-progress", dest="progress", action="store_false",
                     help="no progress bar on stderr")
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "fa-core") -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code.

    Exit codes: 0 done, 2 a usage error or a problem the user can fix (one line on stderr).
    """
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers and not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{prog}: %(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    try:
        for flag, path in (("--json", args.json), ("--plot", args.plot)):
            if path is not None and path != "-":  # fail before the run, not after it
                folder = os.path.dirname(os.path.abspath(path))
                if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
                    raise CLIError(f"{flag} {path}: cannot write there (no such writable "
                                   f"directory: {folder})")
        if args.plot is not None:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise CLIError("--plot needs matplotlib, which is not installed: "
                               "pip install 'fa_core[plot]'") from None
        result = simulate(args.model, args.agents, args.steps, args.seed, args.threads,
                          workers=args.workers, address=args.address, progress=args.progress,
                          compare_pymdp=args.pymdp, pymdp_budget_s=args.pymdp_budget)
        try:
            if args.json is not None:
                text = json.dumps(summary_json(result), indent=2) + "\n"
                if args.json == "-":
                    sys.stdout.write(text)
                else:
                    with open(args.json, "w") as f:
                        f.write(text)
                    log.info("summary written to %s", args.json)
            if args.plot is not None:
                write_plot(result, args.plot)
                log.info("plot written to %s", args.plot)
        finally:
            if hasattr(result["population"], "shutdown"):
                result["population"].shutdown()
    except CLIError as exc:
        parser.exit(2, f"{prog}: error: {exc}\n")
    except OSError as exc:  # an output path that cannot be written
        parser.exit(2, f"{prog}: error: {exc.filename or ''}: {exc.strerror or exc}\n")
    return 0
