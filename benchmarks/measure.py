"""Measuring on a shared, noisy machine: CPU use of this run and of everyone else, alternating rounds, peak memory.

Absolute rates move with whatever else the machine runs, so every figure of the suite is a
ratio of two measurements taken back to back, repeated in rounds (order alternating), and
each sample records how many cores other processes kept busy meanwhile (``others``, from
``/proc/stat`` minus this process and its waited-for children). Rounds disturbed by others
are repeated while the time budget allows, and the report says how noisy the rest were.
"""

import contextlib
import dataclasses
import os
import platform
import statistics
import subprocess
import threading
import time

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Another process keeping this many cores busy on average spoils a sample.
DISTURBED_CORES = 0.25
MEMORY_POLL_SECONDS = 0.05
TREE_POLL_SECONDS = 0.2


def machine_busy_seconds() -> float:
    """CPU-seconds all cores spent not idle since boot (steal included: a neighbour VM also disturbs)."""
    with open("/proc/stat") as handle:
        values = [int(value) for value in handle.readline().split()[1:]]
    idle, iowait = values[3], values[4]
    guest = sum(values[8:10])  # already counted in user / nice
    return (sum(values) - idle - iowait - guest) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """CPU-seconds of this process (all threads) and of the children it has waited for."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


@dataclasses.dataclass
class Sample:
    """One timed measurement: its value, wall time, cores it used and cores others used meanwhile."""

    value: float
    seconds: float
    cores: float
    others: float
    details: dict = dataclasses.field(default_factory=dict)

    @property
    def disturbed(self) -> bool:
        return self.others > DISTURBED_CORES


def sample(measure) -> Sample:
    """Run ``measure()`` (returning a value, or (value, details)) and account for the CPU around it."""
    busy, own, start = machine_busy_seconds(), own_cpu_seconds(), time.perf_counter()
    result = measure()
    seconds = time.perf_counter() - start
    own_used = own_cpu_seconds() - own
    others = max(0.0, (machine_busy_seconds() - busy - own_used) / seconds)
    value, details = result if isinstance(result, tuple) else (result, {})
    return Sample(value, seconds, own_used / seconds, others, details)


def others_load(seconds: float = 0.5) -> float:
    """Cores kept busy by other processes over the next ``seconds``."""
    return sample(lambda: time.sleep(seconds)).others


def wait_for_quiet(max_wait: float) -> float:
    """Wait up to ``max_wait`` seconds for other processes to calm down; returns the last load seen."""
    give_up = time.monotonic() + max_wait
    load = others_load()
    while load > DISTURBED_CORES and time.monotonic() < give_up:
        load = others_load()
    return load


class Budget:
    """The suite's time limit: how long a row may still wait for quiet or add a round."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def left(self) -> float:
        return self.deadline - time.monotonic()


def rounds(measurements: dict, count: int, budget: Budget, *, max_extra: int, quiet_wait: float, log=print) -> list:
    """Rounds of every measurement back to back, order reversed every other round.

    Runs ``count`` rounds whatever the time, so that every ratio has its spread; then, while
    fewer than ``count`` of them were undisturbed, at most ``max_extra`` rounds more, each only
    while ``budget`` leaves time for a round as long as the longest so far. Before each round
    it waits up to ``quiet_wait`` seconds (within the budget) for other processes to calm
    down. Returns [{name: Sample}] of all rounds run; the samples of a disturbed round say so.
    """
    done, longest = [], 0.0
    while True:
        clean = [r for r in done if not any(s.disturbed for s in r.values())]
        if len(clean) >= count or len(done) >= count + max_extra:
            return done
        if len(done) >= count and budget.left() < longest:
            log(f"    time budget spent after {len(done)} rounds")
            return done
        if quiet_wait:
            wait_for_quiet(min(quiet_wait, max(0.0, budget.left() - 2 * longest)))
        names = list(measurements)
        if len(done) % 2:
            names.reverse()
        result, started = {}, time.monotonic()
        for name in names:
            result[name] = sample(measurements[name])
            log(f"    {name}: {result[name].value:.4g} ({result[name].seconds:.1f} s, "
                f"{result[name].cores:.2f} cores, others {result[name].others:.2f})")
        longest = max(longest, time.monotonic() - started)
        done.append({name: result[name] for name in measurements})


@contextlib.contextmanager
def quiet_output():
    """Within the block, what the code measured prints goes nowhere (the suite's own log is printed between samples)."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        yield


def quietly(measurement):
    """``measurement`` with what it prints discarded."""
    def call():
        with quiet_output():
            return measurement()
    return call


def used_samples(done: list, *names: str) -> list:
    """The rounds in which the samples ``names`` were undisturbed (others may have been), or all rounds."""
    return [r for r in done if not any(r[name].disturbed for name in names)] or done


def ratio_summary(done: list, numerator: str, denominator: str) -> dict:
    """Median ratio of two measurements over the rounds where both were undisturbed, with its spread and noise."""
    used = used_samples(done, numerator, denominator)
    ratios = [r[numerator].value / r[denominator].value for r in used]
    samples = [r[name] for r in used for name in (numerator, denominator)]
    return {
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "rounds": len(used),
        "dropped_rounds": len(done) - len(used),  # disturbed rounds left out
        "others_max": max(sample.others for sample in samples),
        "all_disturbed": any(sample.disturbed for sample in samples),  # no quiet round to use
    }


def median_value(done: list, name: str) -> float:
    """Median of one measurement over the rounds where it was undisturbed."""
    return statistics.median(r[name].value for r in used_samples(done, name))


def median_detail(done: list, name: str, key: str) -> float:
    """Median of one detail of a measurement over the rounds where it was undisturbed."""
    return statistics.median(r[name].details[key] for r in used_samples(done, name))


def process_tree(root: int) -> list:
    """Pids of ``root`` and all its descendants, from /proc."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def _status_kb(pid: int, keys: tuple) -> dict:
    """Fields of /proc/pid/status in kB (missing when the process is gone)."""
    values = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                key = line.split(":", 1)[0]
                if key in keys:
                    values[key] = int(line.split()[1])
    except OSError:
        pass
    return values


def _pss_kb(pid: int) -> int:
    """The proportional set size of one process in kB (0 when it is gone): a page shared by n processes counts 1/n."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_with_peak_memory(command: list, **popen_options) -> dict:
    """Run ``command``; returns its return code, stdout, stderr, peak memory in bytes and CPU.

    ``tree_pss``: the largest sum of the proportional set sizes of the process and its
    descendants, sampled every 0.2 s. PSS, not RSS: a process being spawned briefly shares
    all of its parent's pages, and summed resident sets would count them twice.
    ``main_hwm``: the main process's own peak resident set as the kernel tracked it (VmHWM),
    and ``main_cpu`` its CPU-seconds (its workers' not included), both read at the last poll
    (every 50 ms) before it exited.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen_options)
    output = {}
    readers = [
        threading.Thread(target=lambda name=name, stream=stream: output.__setitem__(name, stream.read()))
        for name, stream in (("stdout", process.stdout), ("stderr", process.stderr))
    ]
    for reader in readers:
        reader.start()
    tree_peak, main_hwm, main_cpu, next_tree_poll = 0, 0, 0.0, 0.0
    while process.poll() is None:
        main_hwm = max(main_hwm, _status_kb(process.pid, ("VmHWM",)).get("VmHWM", 0))
        main_cpu = max(main_cpu, _cpu_seconds(process.pid))
        if time.monotonic() >= next_tree_poll:  # reading PSS walks the page tables: ~2 ms for 500 MB
            tree_peak = max(tree_peak, sum(_pss_kb(pid) for pid in process_tree(process.pid)))
            next_tree_poll = time.monotonic() + TREE_POLL_SECONDS
        time.sleep(MEMORY_POLL_SECONDS)
    for reader in readers:
        reader.join()
    return {
        "returncode": process.returncode,
        "stdout": output.get("stdout", ""),
        "stderr": output.get("stderr", ""),
        "tree_pss": tree_peak * 1024,
        "main_hwm": main_hwm * 1024,
        "main_cpu": main_cpu,
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU-seconds of one process (all its threads) so far; 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine() -> dict:
    """What the figures were measured on: CPU model, cores, memory, software versions."""
    model = platform.processor() or "unknown"
    flags = set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    memory = 0
    try:
        with open("/proc/meminfo") as handle:
            memory = int(next(line for line in handle if line.startswith("MemTotal")).split()[1]) * 1024
    except (OSError, StopIteration):
        pass
    return {
        "cpu": model,
        "cpu_features": [flag for flag in ("avx2", "avx512f", "amx_tile") if flag in flags],
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_bytes": memory,
        "hypervisor": "hypervisor" in flags,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }
