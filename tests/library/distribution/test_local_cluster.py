"""The local cluster launcher: TF_CONFIG per task, prefixed logs, stopping, and real TensorFlow clusters."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from library.distribution import local_cluster
from library.tensorflow_env import import_tensorflow
from tests.helpers import ROOT

tf = import_tensorflow()

# Seconds a test waits for a launcher before it kills the launcher's whole process group.
FAKE_TIMEOUT_SECS = 30
CLUSTER_TIMEOUT_SECS = 240

# A task that needs no TensorFlow: it announces itself, then sleeps and exits as argv[1]
# ({task type: [seconds, exit code]}) says; a task type not in it runs until stopped.
FAKE_TASK = textwrap.dedent("""\
    import json, os, sys, time
    task = json.loads(os.environ["TF_CONFIG"])["task"]
    name = f"{task['type']} {task['index']}"
    print(f"{name} started", flush=True)
    print("a line on stderr", file=sys.stderr, flush=True)
    seconds, exit_code = json.loads(sys.argv[1]).get(task["type"], [3600, 0])
    time.sleep(seconds)
    print(f"{name} done", flush=True)
    sys.exit(exit_code)
""")

EXAMPLES, GLOBAL_BATCH, EPOCHS = 64, 8, 3
TRAIN_SHARDS = 4

# One task of a real cluster: a linear regression on the TFRecords of a directory, trained the
# way the run loop trains with distribution != none. It prints each input pipeline's share and
# each evaluation, which the test reads back from the launcher's prefixed output.
TRAINER = textwrap.dedent(f"""\
    import os, sys
    sys.path.insert(0, {ROOT!r})
    from library.distribution import strategies
    from library.evaluation.best_checkpoint import BestCheckpoint
    from library.tensorflow_env import import_tensorflow, use_graph_mode

    tf = import_tensorflow()
    use_graph_mode()
    ModeKeys = tf.estimator.ModeKeys
    DISTRIBUTION, DATA_DIR, MODEL_DIR, BEST_DIR = sys.argv[1:]
    GLOBAL_BATCH, EXAMPLES, EPOCHS = {GLOBAL_BATCH}, {EXAMPLES}, {EPOCHS}


    def parse(record):
        spec = {{"x": tf.io.FixedLenFeature([4], tf.float32), "y": tf.io.FixedLenFeature([1], tf.float32)}}
        example = tf.io.parse_single_example(record, spec)
        return {{"x": example["x"]}}, example["y"]


    def input_fn(params, mode, input_context=None):
        files = sorted(tf.io.gfile.glob(os.path.join(DATA_DIR, "train-*" if mode == ModeKeys.TRAIN else "eval-*")))
        if mode != ModeKeys.TRAIN:
            return tf.data.TFRecordDataset(files).map(parse).batch(GLOBAL_BATCH)
        files = files[input_context.input_pipeline_id::input_context.num_input_pipelines]
        batch = input_context.get_per_replica_batch_size(GLOBAL_BATCH)
        print(f"input pipeline {{input_context.input_pipeline_id}} of {{input_context.num_input_pipelines}}: "
              f"{{', '.join(os.path.basename(name) for name in files)}}; batch {{batch}}", flush=True)
        return tf.data.TFRecordDataset(files).map(parse).repeat().batch(batch, drop_remainder=True)


    def model_fn(features, labels, mode):
        weights = tf.compat.v1.get_variable("weights", [4, 1], initializer=tf.compat.v1.zeros_initializer())
        loss = tf.compat.v1.losses.mean_squared_error(labels, tf.matmul(features["x"], weights))
        if mode == ModeKeys.EVAL:
            return tf.estimator.EstimatorSpec(mode, loss=loss)
        optimizer = tf.compat.v1.train.GradientDescentOptimizer(0.05)
        train_op = optimizer.minimize(loss, tf.compat.v1.train.get_global_step())
        return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)


    def report(eval_result, epoch, improved):
        loss = float(eval_result["loss"])
        print(f"evaluated step {{eval_result['global_step']}} epoch {{epoch}} loss {{loss!r}}", flush=True)


    tf_config = strategies.read_tf_config(DISTRIBUTION)
    train_distribute = strategies.train_strategy(DISTRIBUTION)
    steps_per_epoch = EXAMPLES // strategies.images_per_step(GLOBAL_BATCH, train_distribute, tf_config)
    session_config = strategies.with_device_filters(
        tf.compat.v1.ConfigProto(allow_soft_placement=True), DISTRIBUTION, tf_config)
    run_config = tf.estimator.RunConfig(MODEL_DIR, save_checkpoints_steps=steps_per_epoch, train_distribute=train_distribute,
                                        session_config=session_config, experimental_max_worker_delay_secs=0)
    strategies.train_and_evaluate(
        tf.estimator.Estimator(model_fn, config=run_config),
        strategies.training_input_fn(input_fn, {{}}, DISTRIBUTION, tf_config), lambda: input_fn({{}}, ModeKeys.EVAL),
        max_steps=EPOCHS * steps_per_epoch, best=BestCheckpoint(BEST_DIR), steps_per_epoch=steps_per_epoch,
        on_evaluation=report, throttle_secs=1,
    )
""")


# A cluster laid out the other accepted way: every task's cluster lists the evaluator.
EVALUATOR_EVERYWHERE = textwrap.dedent("""\
    import dataclasses, sys
    from library.distribution import local_cluster
    tasks = local_cluster.cluster_tasks(workers=1, ps=1, evaluator=True, addresses=local_cluster.loopback_addresses(4))
    with_evaluator = tasks[-1].tf_config["cluster"]
    tasks = [dataclasses.replace(task, tf_config={**task.tf_config, "cluster": with_evaluator}) for task in tasks]
    sys.exit(local_cluster.run(tasks, sys.argv[1:]))
""")
LAUNCHER = ("-m", "library.distribution.local_cluster")


def group_alive(group: int) -> bool:
    """Whether any process of process group ``group`` is still running."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def in_own_group(*python_args):
    """Python with ``python_args``, in a process group of its own that is killed on the way out, whatever happened."""
    process = subprocess.Popen([sys.executable, *python_args], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        yield process
    finally:
        if group_alive(process.pid):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()


def run_in_own_group(*python_args, timeout):
    """(exit status, stdout, stderr) of a Python run, having checked that it left no process behind."""
    with in_own_group(*python_args) as process:
        stdout, stderr = process.communicate(timeout=timeout)
        assert not group_alive(process.pid), "a task outlived the launcher"
    return process.returncode, stdout, stderr


def run_fake_cluster(tmp_path, behaviour, *cluster_args):
    """Run FAKE_TASK as every task of a cluster; ``behaviour``: {task type: [seconds, exit code]}."""
    script = tmp_path / "task.py"
    script.write_text(FAKE_TASK)
    return run_in_own_group(*LAUNCHER, *cluster_args, "--", str(script), json.dumps(behaviour),
                            timeout=FAKE_TIMEOUT_SECS)


# --- TF_CONFIG of each task -------------------------------------------------------------------

def test_cluster_tasks_share_one_training_cluster_and_the_evaluator_adds_itself():
    addresses = iter(["h:1", "h:2", "h:3", "h:4", "h:5"])
    tasks = local_cluster.cluster_tasks(workers=2, ps=1, evaluator=True, addresses=addresses)

    training = {"chief": ["h:1"], "worker": ["h:2", "h:3"], "ps": ["h:4"]}
    assert [task.label for task in tasks] == ["chief", "worker 0", "worker 1", "ps 0", "evaluator"]
    assert [task.tf_config for task in tasks] == [
        {"cluster": training, "task": {"type": "chief", "index": 0}},
        {"cluster": training, "task": {"type": "worker", "index": 0}},
        {"cluster": training, "task": {"type": "worker", "index": 1}},
        {"cluster": training, "task": {"type": "ps", "index": 0}},
        {"cluster": {**training, "evaluator": ["h:5"]}, "task": {"type": "evaluator", "index": 0}},
    ]


def test_a_collective_cluster_has_no_ps_job():
    tasks = local_cluster.cluster_tasks(workers=1, ps=0, evaluator=False, addresses=iter(["h:1", "h:2"]))
    assert tasks[0].tf_config["cluster"] == {"chief": ["h:1"], "worker": ["h:2"]}


def test_loopback_addresses_are_distinct_free_ports():
    addresses = list(local_cluster.loopback_addresses(5))
    assert len(set(addresses)) == 5
    for address in addresses:
        host, port = address.split(":")
        with socket.socket() as sock:
            sock.bind((host, int(port)))  # free: nothing holds it
        assert host == "127.0.0.1"


def test_print_tf_config_prints_every_tasks_variable_and_starts_nothing():
    status, stdout, _ = run_in_own_group(*LAUNCHER, "--workers", "1", "--ps", "1", "--evaluator", "--print_tf_config",
                                         timeout=FAKE_TIMEOUT_SECS)

    assert status == 0
    lines = stdout.splitlines()
    assert [line.split(" TF_CONFIG=")[0] for line in lines] == ["[chief]", "[worker 0]", "[ps 0]", "[evaluator]"]
    tf_configs = [json.loads(line.split(" TF_CONFIG=")[1].strip("'")) for line in lines]
    assert [tf_config["task"]["type"] for tf_config in tf_configs] == ["chief", "worker", "ps", "evaluator"]


def test_a_missing_command_is_a_one_line_usage_error():
    status, _, stderr = run_in_own_group(*LAUNCHER, "--workers", "1", timeout=FAKE_TIMEOUT_SECS)
    assert status == 2
    assert stderr == ("error: give the command each task runs after --, e.g. -- run.py --config_set X "
                      "(see python -m library.distribution.local_cluster --help)\n")


def test_more_tasks_than_a_machine_runs_is_a_one_line_error():
    status, stdout, stderr = run_in_own_group(*LAUNCHER, "--workers", "100000", "--print_tf_config",
                                              timeout=FAKE_TIMEOUT_SECS)
    assert (status, stdout) == (2, "")
    assert stderr == ("error: a cluster of 100001 tasks is more than one machine runs; at most 64 in all "
                      "(see python -m library.distribution.local_cluster --help)\n")


# --- supervising the tasks --------------------------------------------------------------------

@pytest.mark.slow
def test_after_the_chief_the_evaluator_is_awaited_and_the_rest_stopped(tmp_path):
    status, stdout, stderr = run_fake_cluster(
        tmp_path, {"chief": [0.5, 0], "evaluator": [2, 0]}, "--workers", "2", "--ps", "1", "--evaluator")

    assert status == 0
    for label, name in [("chief", "chief 0"), ("worker 0", "worker 0"), ("worker 1", "worker 1"),
                        ("ps 0", "ps 0"), ("evaluator", "evaluator 0")]:
        assert f"[{label}] {name} started\n" in stdout
        assert f"[{label}] a line on stderr\n" in stderr
    assert "[chief] chief 0 done\n" in stdout and "[evaluator] evaluator 0 done\n" in stdout
    assert "[ps 0] ps 0 done" not in stdout  # ps tasks never finish on their own: stopped
    assert "[local_cluster] chief finished; stopping the other training tasks\n" in stderr

@pytest.mark.slow
def test_a_failed_task_stops_the_cluster_with_its_exit_status(tmp_path):
    status, stdout, stderr = run_fake_cluster(tmp_path, {"worker": [0.5, 3]}, "--workers", "1", "--ps", "1", "--evaluator")

    assert status == 3
    assert "[local_cluster] worker 0 failed with exit status 3; stopping the cluster\n" in stderr
    assert "[chief] chief 0 done" not in stdout


@pytest.mark.slow
def test_an_interrupt_stops_every_task(tmp_path):
    script = tmp_path / "task.py"
    script.write_text(FAKE_TASK)
    with in_own_group(*LAUNCHER, "--workers", "1", "--ps", "1", "--evaluator", "--", str(script), "{}") as process:
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=2)  # every task is up and would run for an hour
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=FAKE_TIMEOUT_SECS)
        assert not group_alive(process.pid)
    assert process.returncode == 130
    assert "[local_cluster] interrupted; stopping the cluster\n" in stderr


# --- real TensorFlow clusters -----------------------------------------------------------------

def write_records(directory):
    """Train shards and an eval shard of y = x . [1, 2, 3, 4] examples, as generated TFRecords."""
    directory.mkdir()
    rng = np.random.default_rng(0)

    def write(name, count):
        with tf.io.TFRecordWriter(str(directory / name)) as writer:
            for x in rng.uniform(size=(count, 4)):
                features = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=x)),
                            "y": tf.train.Feature(float_list=tf.train.FloatList(value=[x @ [1, 2, 3, 4]]))}
                writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())

    for shard in range(TRAIN_SHARDS):
        write(f"train-{shard:05d}-of-{TRAIN_SHARDS:05d}", EXAMPLES // TRAIN_SHARDS)
    write("eval-00000-of-00001", 16)
    return str(directory)


def evaluations(stdout):
    """{step: loss} of every evaluation the evaluator reported."""
    found = re.findall(r"^\[evaluator\] evaluated step (\d+) epoch \S+ loss (\S+)$", stdout, re.MULTILINE)
    return {int(step): float(loss) for step, loss in found}


PS_STEPS_PER_EPOCH = EXAMPLES // (GLOBAL_BATCH // 2)  # asynchronous: a step is one of 2 workers' batch
COLLECTIVE_STEPS_PER_EPOCH = EXAMPLES // GLOBAL_BATCH  # synchronous: a step is the global batch


@pytest.mark.slow
@pytest.mark.parametrize("distribution_name, steps_per_epoch, starter", [
    ("parameter_server", PS_STEPS_PER_EPOCH, (*LAUNCHER, "--workers", "1", "--ps", "1", "--evaluator", "--")),
    ("multi_worker", COLLECTIVE_STEPS_PER_EPOCH, (*LAUNCHER, "--workers", "1", "--evaluator", "--")),
    # A ps-mode task whose cluster lists a task that never answers must not wait for it.
    ("parameter_server", PS_STEPS_PER_EPOCH, ("-c", EVALUATOR_EVERYWHERE)),
], ids=["parameter_server", "multi_worker", "parameter_server-evaluator_everywhere"])
def test_a_real_cluster_trains_to_the_step_and_the_evaluator_keeps_the_best_snapshot(
        tmp_path, distribution_name, steps_per_epoch, starter):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    model_dir, best_dir = str(tmp_path / "model"), str(tmp_path / "best")
    max_steps = EPOCHS * steps_per_epoch

    status, stdout, stderr = run_in_own_group(
        *starter, str(script), distribution_name, write_records(tmp_path / "data"), model_dir, best_dir,
        timeout=CLUSTER_TIMEOUT_SECS)

    assert status == 0, stdout + stderr
    # Each of the two training workers reads its own half of the files in half batches.
    assert "[chief] input pipeline 0 of 2: train-00000-of-00004, train-00002-of-00004; batch 4\n" in stdout
    assert "[worker 0] input pipeline 1 of 2: train-00001-of-00004, train-00003-of-00004; batch 4\n" in stdout
    # Asynchronous workers may push the step past max_steps before the chief's last checkpoint.
    assert tf.train.load_variable(tf.train.latest_checkpoint(model_dir), "global_step") >= max_steps
    assert tf.io.gfile.glob(os.path.join(model_dir, "eval", "events.out.tfevents.*"))
    losses = evaluations(stdout)
    assert max(losses) >= max_steps
    # The snapshot is the evaluated checkpoint with the lowest loss, restorable, with its record.
    snapshot = tf.train.latest_checkpoint(best_dir)
    best_step = min(losses, key=losses.get)
    assert tf.train.load_variable(snapshot, "global_step") == best_step
    assert tf.train.load_checkpoint(snapshot).get_tensor("weights").shape == (4, 1)
    with open(snapshot + ".json") as handle:
        record = json.load(handle)
    assert (record["step"], record["epoch"]) == (best_step, best_step / steps_per_epoch)
    assert record["loss"] == pytest.approx(losses[best_step])
