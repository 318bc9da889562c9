"""Run a whole TensorFlow training cluster on this machine, one process per task, on loopback ports.

    python -m library.distribution.local_cluster --workers 2 --ps 1 --evaluator -- run.py --distribution parameter_server
    python -m library.distribution.local_cluster --workers 1 --evaluator -- run.py --distribution multi_worker

Every task runs the command after ``--`` with this Python and its own TF_CONFIG: a chief,
``--workers`` workers, ``--ps`` parameter servers (none: a collective all-reduce cluster)
and, with ``--evaluator``, an evaluator. Their output is streamed line by line, prefixed
with the task (``[chief]``, ``[worker 0]``, ``[ps 0]``, ``[evaluator]``).

The cluster is stopped when a task fails, or once the chief has finished: the other training
tasks are then stopped (ps tasks never exit on their own) and the evaluator is awaited, as it
ends after evaluating the final checkpoint. The exit status is the failed task's, else 0;
Ctrl-C stops every task.

It is also the reference for writing TF_CONFIG by hand: each task's is printed at start
(``--print_tf_config`` prints them without running anything). The training tasks share one
cluster (chief, worker, ps); the evaluator is not part of it, but its own TF_CONFIG lists
its address under "evaluator", which collective all-reduce looks up.
"""

import argparse
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Iterable, Iterator, Optional

from library.configuration.command_line import OneLineParser

HOST = "127.0.0.1"
POLL_SECS = 0.2
# Tasks one machine runs at most: each is a TensorFlow process, and the ports are held open while chosen.
MAX_TASKS = 64
# Seconds a task gets to exit after SIGTERM before it is killed.
STOP_GRACE_SECS = 10
_output_lock = threading.Lock()


@dataclasses.dataclass(frozen=True, eq=False)
class Task:
    """One process of the cluster: its TF_CONFIG task type and index, and its whole TF_CONFIG."""

    type: str
    index: int
    tf_config: dict

    @property
    def label(self) -> str:
        """How its output lines are prefixed: chief and evaluator are unique, the others numbered."""
        return self.type if self.type in ("chief", "evaluator") else f"{self.type} {self.index}"


def cluster_tasks(workers: int, ps: int, evaluator: bool, addresses: Iterator[str]) -> list[Task]:
    """The tasks of a cluster with a chief, ``workers`` workers, ``ps`` parameter servers and maybe an evaluator."""
    sizes = {"chief": 1, "worker": workers, "ps": ps}
    cluster = {task_type: [next(addresses) for _ in range(size)] for task_type, size in sizes.items() if size}
    tasks = [
        Task(task_type, index, {"cluster": cluster, "task": {"type": task_type, "index": index}})
        for task_type, size in sizes.items() for index in range(size)
    ]
    if evaluator:
        evaluator_cluster = {**cluster, "evaluator": [next(addresses)]}
        tasks.append(Task("evaluator", 0, {"cluster": evaluator_cluster, "task": {"type": "evaluator", "index": 0}}))
    return tasks


def loopback_addresses(count: int) -> Iterator[str]:
    """``count`` distinct free ports on 127.0.0.1; held together while chosen so none repeats."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return iter([f"{HOST}:{sock.getsockname()[1]}" for sock in sockets])
    finally:
        for sock in sockets:
            sock.close()


def tf_config_line(task: Task) -> str:
    """The task's TF_CONFIG as a shell assignment, ready to copy."""
    return f"[{task.label}] TF_CONFIG='{json.dumps(task.tf_config)}'"


def start(task: Task, command: list[str]) -> tuple:
    """Start ``command`` with this Python and the task's TF_CONFIG; (process, threads streaming its output)."""
    environment = {**os.environ, "TF_CONFIG": json.dumps(task.tf_config), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, *command], env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, errors="replace")
    readers = [
        threading.Thread(target=stream, args=(source, sink, f"[{task.label}] "), daemon=True)
        for source, sink in ((process.stdout, sys.stdout), (process.stderr, sys.stderr))
    ]
    for reader in readers:
        reader.start()
    return process, readers


def stream(source, sink, prefix: str) -> None:
    """Copy ``source`` to ``sink`` line by line with ``prefix`` until it closes."""
    for line in source:
        emit(sink, prefix + line.rstrip("\n"))


def emit(sink, line: str) -> None:
    """Write one whole line at once, so the lines of different tasks never interleave."""
    with _output_lock:
        sink.write(line + "\n")
        sink.flush()


def say(message: str) -> None:
    """A line of the launcher's own, prefixed like the tasks' lines."""
    emit(sys.stderr, f"[local_cluster] {message}")


def exit_status(returncode: int) -> int:
    """A process's return code as a shell exit status (killed by signal N: 128 + N)."""
    return returncode if returncode >= 0 else 128 - returncode


def wait_for(awaited: list, watched: dict) -> Optional[tuple]:
    """Wait until every ``awaited`` process has exited with 0; (task, status) of a failed ``watched`` task instead."""
    while True:
        for task, process in watched.items():
            if process.poll():
                return task, exit_status(process.returncode)
        if all(process.poll() == 0 for process in awaited):
            return None
        time.sleep(POLL_SECS)


def of_type(processes: dict, *types: str) -> dict:
    """The processes of the tasks of ``types``."""
    return {task: process for task, process in processes.items() if task.type in types}


def supervise(processes: dict) -> int:
    """Wait for the chief, then stop the other training tasks and wait for the evaluator; the exit status."""
    failure = wait_for(list(of_type(processes, "chief").values()), processes)
    if failure is None:
        say("chief finished; stopping the other training tasks")
        stop(of_type(processes, "worker", "ps").values())
        evaluator = of_type(processes, "evaluator")
        failure = wait_for(list(evaluator.values()), evaluator)
    if failure is None:
        return 0
    task, status = failure
    say(f"{task.label} failed with exit status {status}; stopping the cluster")
    return status


def stop(processes: Iterable[subprocess.Popen]) -> None:
    """Terminate the processes still running, and kill those that outlive the grace period."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECS
    for process in running:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run(tasks: list[Task], command: list[str]) -> int:
    """Start every task, supervise them, and leave no process behind; the cluster's exit status."""
    processes, readers = {}, []
    try:
        for task in tasks:
            emit(sys.stdout, tf_config_line(task))
            processes[task], task_readers = start(task, command)
            readers += task_readers
        return supervise(processes)
    except KeyboardInterrupt:
        say("interrupted; stopping the cluster")
        return 130
    finally:
        stop(processes.values())
        for reader in readers:  # the last lines of every task, before the launcher exits
            reader.join(timeout=STOP_GRACE_SECS)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The launcher's options and the command after ``--``."""
    parser = OneLineParser(prog="python -m library.distribution.local_cluster", description=__doc__.split("\n\n")[0],
                            allow_abbrev=False)
    parser.add_argument("--workers", type=int, default=1, help="worker tasks besides the chief (default: 1)")
    parser.add_argument("--ps", type=int, default=0,
                        help="parameter servers; 0: a collective all-reduce cluster (default: 0)")
    parser.add_argument("--evaluator", action="store_true", help="add an evaluator task")
    parser.add_argument("--print_tf_config", action="store_true", help="print each task's TF_CONFIG and exit")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the script and its arguments")
    args = parser.parse_args(argv)
    args.command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if args.workers < 0 or args.ps < 0:
        parser.error("--workers and --ps cannot be negative")
    tasks = 1 + args.workers + args.ps + args.evaluator
    if tasks > MAX_TASKS:
        parser.error(f"a cluster of {tasks} tasks is more than one machine runs; at most {MAX_TASKS} in all")
    if not args.command and not args.print_tf_config:
        parser.error("give the command each task runs after --, e.g. -- run.py --config_set X")
    return args


def raise_keyboard_interrupt(signum, frame):
    """Treat SIGTERM like Ctrl-C, so a terminated launcher still stops its tasks."""
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    """Run the cluster the command line asks for; its exit status."""
    args = parse_args(argv)
    tasks = cluster_tasks(args.workers, args.ps, args.evaluator,
                          loopback_addresses(1 + args.workers + args.ps + args.evaluator))
    if args.print_tf_config:
        print("\n".join(tf_config_line(task) for task in tasks))
        return 0
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    return run(tasks, args.command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
