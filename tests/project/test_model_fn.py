"""project.model_fn: EstimatorSpecs per mode, loss terms, schedules, optimizers, frozen and fine-tuned training."""

import os

import numpy as np
import pytest
import tensorflow_hub as hub

from library.distribution import towers
from project import feature_extractor, model_fn
from project.options import OPTIONS
from tests.helpers import tf

v1 = tf.compat.v1
ModeKeys = tf.estimator.ModeKeys
IMAGE_SIZE = 32
BATCH = 8
CLASS_NAMES = ["zero", "one", "two"]
MODULE_PREFIX = model_fn.MODULE_SCOPE + "/"
MODULE_KERNELS = {f"{MODULE_PREFIX}conv{index}/conv/kernel" for index in range(5)}
MODULE_VARIABLES = 25  # Five convolutions: kernel, gamma, beta and two moving averages each.
HEAD_KERNEL = "head/logits/kernel"


def make_params(**overrides):
    """Every option's default, the small CNN on 32x32 images, and what the run loop adds."""
    params = {option.name: option.default for option in OPTIONS}
    params.update(hub_module="small_cnn", image_size=IMAGE_SIZE, random_seed=0, num_classes=len(CLASS_NAMES),
                  class_names=CLASS_NAMES, steps_per_epoch=2, train_steps=4)
    params.update(overrides)
    return params


def fixed_batch(num_classes=len(CLASS_NAMES)):
    """Images float32 [0, 255] and int32 labels as the input pipeline gives them, the same on every call."""
    random = np.random.RandomState(0)
    images = random.uniform(0, 255, [BATCH, IMAGE_SIZE, IMAGE_SIZE, 3]).astype(np.float32)
    return {"image": tf.constant(images)}, tf.constant(np.arange(BATCH) % num_classes, tf.int32)


def run_initialized(fetches):
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        return session.run(fetches)


def numpy_cross_entropy(logits, labels, smoothing):
    """Mean softmax cross-entropy against one-hot labels smoothed towards the uniform distribution."""
    num_classes = logits.shape[1]
    targets = np.eye(num_classes)[labels] * (1 - smoothing) + smoothing / num_classes
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -(targets * log_probabilities).sum(axis=1).mean()


@pytest.mark.parametrize("fine_tuning, trainable_variables, update_ops", [(True, 17, 10), (False, 2, 0)])
def test_train_spec(fine_tuning, trainable_variables, update_ops):
    """Loss, train op and summaries; the module's 15 variables and 10 moving-average updates only when fine-tuning."""
    features, labels = fixed_batch()
    spec = model_fn.model_fn(features, labels, ModeKeys.TRAIN, make_params(fine_tuning=fine_tuning))
    assert spec.loss.shape == [] and spec.train_op is not None
    assert len(v1.trainable_variables()) == trainable_variables
    assert len(v1.get_collection(v1.GraphKeys.UPDATE_OPS)) == update_ops
    summaries = {summary.op.name for summary in v1.get_collection(v1.GraphKeys.SUMMARIES)}
    assert summaries == {"loss", "loss/cross_entropy", "loss/weight_decay", "loss/module_regularization", "accuracy",
                         "images", "learning_rate"}


REPORT_METRICS = {"confusion_matrix", "mistakes/probability", "mistakes/label", "mistakes/prediction", "mistakes/image"}


@pytest.mark.parametrize("num_classes, metrics", [
    (3, {"accuracy", "mean_per_class_accuracy"} | REPORT_METRICS),
    (6, {"accuracy", "mean_per_class_accuracy", "top_5_accuracy"} | REPORT_METRICS),
])
def test_eval_spec(num_classes, metrics):
    features, labels = fixed_batch(num_classes)
    params = make_params(num_classes=num_classes, class_names=[str(index) for index in range(num_classes)])
    spec = model_fn.model_fn(features, labels, ModeKeys.EVAL, params)
    assert spec.loss.shape == [] and spec.train_op is None
    assert set(spec.eval_metric_ops) == metrics


def test_eval_metrics_values():
    labels = np.array([0, 0, 0, 1, 2, 3, 4, 5])
    predicted = np.array([0, 0, 1, 1, 0, 0, 0, 0])
    # After the predicted class, the scores rank classes 5, 4, 3, 2, 1, 0: a top 5 leaves out class 1,
    # or class 0 where 1 is predicted, so only row 2 (label 0, predicted 1) misses the top 5.
    logits = np.eye(6)[predicted] * 10.0 + np.linspace(0, 1, 6)
    metric_ops = model_fn.eval_metrics(tf.constant(labels), tf.constant(logits, tf.float32), 6)
    with v1.Session() as session:
        session.run(v1.local_variables_initializer())
        session.run([update for _, update in metric_ops.values()])
        values = session.run({name: value for name, (value, _) in metric_ops.items()})
    expected = {"accuracy": 3 / 8, "mean_per_class_accuracy": (2 / 3 + 1) / 6, "top_5_accuracy": 7 / 8}
    assert values == pytest.approx(expected)


def test_report_metrics_stream_the_confusion_matrix_and_the_most_confident_mistakes(monkeypatch):
    """Three batches; the 3 most confident of 5 mistakes are kept, as 2x2 thumbnails of the 4x4 images."""
    monkeypatch.setattr(model_fn, "MISTAKES", 3)
    monkeypatch.setattr(model_fn, "MISTAKE_THUMBNAIL", 2)
    # (file, label, class probabilities); an image is filled with 10 times its position.
    batches = [
        [("a", 0, [0.7, 0.2, 0.1]), ("b", 1, [0.6, 0.3, 0.1]), ("c", 2, [0.1, 0.8, 0.1])],
        [("d", 2, [0.05, 0.05, 0.9]), ("e", 0, [0.1, 0.2, 0.7]), ("f", 1, [0.5, 0.4, 0.1])],
        [("g", 0, [0.2, 0.75, 0.05])],
    ]
    labels, logits = v1.placeholder(tf.int32, [None]), v1.placeholder(tf.float32, [None, 3])
    features = {"image": v1.placeholder(tf.float32, [None, 4, 4, 3]), "filename": v1.placeholder(tf.string, [None])}
    metric_ops = model_fn.report_metrics(labels, logits, features, 3)
    update = [update for _, update in metric_ops.values()]
    values = {name: value for name, (value, _) in metric_ops.items()}
    seen, after = 0, []
    with v1.Session() as session:
        session.run(v1.local_variables_initializer())
        for batch in batches:
            session.run(update, {
                features["filename"]: [name.encode() for name, _, _ in batch],
                labels: [label for _, label, _ in batch],
                logits: np.log([probabilities for _, _, probabilities in batch]),
                features["image"]: np.stack([np.full([4, 4, 3], 10.0 * (seen + i)) for i in range(len(batch))]),
            })
            seen += len(batch)
            after.append(session.run(values))
    np.testing.assert_allclose(after[0]["mistakes/probability"], [0.8, 0.6, -1], rtol=1e-5)
    np.testing.assert_array_equal(after[-1]["confusion_matrix"], [[1, 1, 1], [2, 0, 0], [0, 1, 1]])
    final = after[-1]
    np.testing.assert_allclose(final["mistakes/probability"], [0.8, 0.75, 0.7], rtol=1e-5)
    assert list(final["mistakes/filename"]) == [b"c", b"g", b"e"]
    np.testing.assert_array_equal(final["mistakes/label"], [2, 0, 0])
    np.testing.assert_array_equal(final["mistakes/prediction"], [1, 1, 2])
    assert final["mistakes/image"].dtype == np.uint8 and final["mistakes/image"].shape == (3, 2, 2, 3)
    np.testing.assert_array_equal(final["mistakes/image"][:, 0, 0, 0], [20, 60, 40])


def test_predict_spec_names_the_most_probable_class_and_exports_it_for_serving():
    features, _ = fixed_batch()
    filenames = [f"image{index}.jpg".encode() for index in range(BATCH)]
    spec = model_fn.model_fn({**features, "filename": tf.constant(filenames)}, None, ModeKeys.PREDICT, make_params())
    serving = spec.export_outputs["serving_default"]
    assert isinstance(serving, tf.estimator.export.PredictOutput)
    assert set(serving.outputs) == set(spec.predictions) == {"class_id", "class_name", "probabilities", "filename"}
    predictions = run_initialized(spec.predictions)
    assert list(predictions["filename"]) == filenames
    np.testing.assert_allclose(predictions["probabilities"].sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(predictions["class_id"], predictions["probabilities"].argmax(axis=1))
    assert [name.decode() for name in predictions["class_name"]] == [CLASS_NAMES[i] for i in predictions["class_id"]]


def test_predict_spec_gives_the_top_k_classes_most_probable_first():
    logits = tf.constant(np.log([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]), tf.float32)
    spec = model_fn.predict_spec(logits, CLASS_NAMES, {}, top_k=2)
    assert set(spec.export_outputs["serving_default"].outputs) == {
        "class_id", "class_name", "probabilities", "top_k_class_names", "top_k_probabilities"}
    predictions = run_initialized(spec.predictions)
    assert predictions["top_k_class_names"].tolist() == [[b"one", b"two"], [b"zero", b"two"]]
    np.testing.assert_allclose(predictions["top_k_probabilities"], [[0.5, 0.3], [0.6, 0.3]], rtol=1e-5)


@pytest.mark.parametrize("smoothing, l2, fine_tuning, decayed", [
    (0.0, 0.0, False, {HEAD_KERNEL}),
    (0.2, 0.0, False, {HEAD_KERNEL}),
    (0.0, 0.01, False, {HEAD_KERNEL}),
    (0.1, 0.01, True, MODULE_KERNELS | {HEAD_KERNEL}),
])
def test_loss_is_smoothed_cross_entropy_plus_l2_of_trainable_kernels(monkeypatch, smoothing, l2, fine_tuning, decayed):
    logits_seen = []
    loss_terms = model_fn.loss_terms

    def recording_loss_terms(labels, logits, params):
        logits_seen.append(logits)
        return loss_terms(labels, logits, params)

    monkeypatch.setattr(model_fn, "loss_terms", recording_loss_terms)
    features, labels = fixed_batch()
    params = make_params(xentropy_label_smoothing=smoothing, l2_regularization=l2, fine_tuning=fine_tuning)
    spec = model_fn.model_fn(features, labels, ModeKeys.EVAL, params)
    kernels = {variable.op.name: variable for variable in v1.trainable_variables() if variable.op.name in decayed}
    assert set(kernels) == decayed
    loss, logits, label_values, kernel_values = run_initialized([spec.loss, logits_seen[0], labels, kernels])
    l2_term = l2 * sum((value ** 2).sum() / 2 for value in kernel_values.values())
    assert loss == pytest.approx(numpy_cross_entropy(logits, label_values, smoothing) + l2_term, rel=1e-5)


@pytest.mark.parametrize("schedule, warmup_epochs, steps_and_rates", [
    ("constant", 0, [(0, 0.1), (7, 0.1)]),
    ("cosine", 0, [(0, 0.1), (50, 0.05), (100, 0.0)]),
    ("exponential", 0, [(9, 0.1), (10, 0.05), (25, 0.025)]),
    # a warm-up over 2 epochs: from 1/20 of the rate at step 0, linearly, then the schedule's rate
    ("constant", 2, [(0, 0.005), (9, 0.05), (19, 0.1), (40, 0.1)]),
    ("cosine", 2, [(0, 0.005), (49, 0.05 * (1 + np.cos(np.pi * 0.49))), (100, 0.0)]),
])
def test_learning_rate_schedules(schedule, warmup_epochs, steps_and_rates):
    """100 steps in all, 10 an epoch, the exponential schedule halving the rate each epoch."""
    params = make_params(learning_rate=0.1, learning_rate_schedule=schedule, learning_rate_decay=0.5,
                         learning_rate_warmup_epochs=warmup_epochs, steps_per_epoch=10, train_steps=100)
    step = v1.placeholder(tf.int64, [])
    rate = model_fn.learning_rate(params, step)
    with v1.Session() as session:
        rates = [session.run(rate, {step: value}) for value, _ in steps_and_rates]
    assert rates == pytest.approx([expected for _, expected in steps_and_rates], abs=1e-7)


@pytest.mark.parametrize("multiplier, module_step", [(1.0, 0.1), (0.1, 0.01)])
def test_fine_tuning_moves_the_module_at_its_multiple_of_the_heads_rate(multiplier, module_step):
    """One Adam step moves each weight by its learning rate (the sign of its gradient): the head's 0.1, the module's
    0.1 x module_learning_rate_multiplier."""
    features, labels = fixed_batch()
    params = make_params(fine_tuning=True, learning_rate=0.1, module_learning_rate_multiplier=multiplier,
                         dropout_rate=0.0)
    spec = model_fn.model_fn(features, labels, ModeKeys.TRAIN, params)
    weights = {name: variable for variable in v1.global_variables() for name in (HEAD_KERNEL, f"{MODULE_PREFIX}conv4/conv/kernel")
               if variable.op.name == name}
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        before = session.run(weights)
        session.run(spec.train_op)
        after, step = session.run([weights, v1.train.get_global_step()])
    moved = {name: np.abs(after[name] - before[name]) for name in weights}
    assert step == 1
    assert np.median(moved[HEAD_KERNEL]) == pytest.approx(0.1, rel=1e-3)
    assert np.median(moved[f"{MODULE_PREFIX}conv4/conv/kernel"]) == pytest.approx(module_step, rel=1e-3)


@pytest.mark.parametrize("optimizer, expected_weight", [
    ("SGD", -0.2),  # two steps of -0.1
    ("Momentum", -0.29),  # -0.1, then -0.1 * (1 + 0.9)
    ("Adam", -0.2),  # a constant gradient moves Adam by the learning rate each step
])
def test_optimizer_from_the_hyperparameters(optimizer, expected_weight):
    weight = v1.get_variable("weight", [], initializer=v1.zeros_initializer())
    params = make_params(optimizer=optimizer, learning_rate=0.1, momentum=0.9)
    step = model_fn.train_op(tf.identity(weight), params)
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        session.run(step)
        session.run(step)
        assert session.run(weight) == pytest.approx(expected_weight, abs=1e-6)


def test_mixed_precision_on_a_cpu_warns_and_trains_in_float32(caplog):
    weight = v1.get_variable("weight", [], initializer=v1.zeros_initializer())
    model_fn.train_op(tf.identity(weight), make_params(mixed_precision=True))
    assert "mixed_precision ignored: no GPU here, training in float32" in caplog.text
    assert not [variable for variable in v1.global_variables() if "loss_scale" in variable.op.name]


def train_input_fn():
    """The fixed batch, forever."""
    features, labels = fixed_batch()
    return tf.data.Dataset.from_tensors((features, labels)).repeat()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """{fine_tuning: model_dir} after 3 Adam steps from the same start (step 0 is checkpointed too)."""
    model_dirs = {}
    for fine_tuning in (False, True):
        model_dir = str(tmp_path_factory.mktemp(f"fine_tuning_{fine_tuning}"))
        config = tf.estimator.RunConfig(tf_random_seed=0, log_step_count_steps=None)
        params = make_params(fine_tuning=fine_tuning, learning_rate=0.01, dropout_rate=0.0)
        tf.estimator.Estimator(model_fn.model_fn, model_dir, config, params).train(train_input_fn, max_steps=3)
        model_dirs[fine_tuning] = model_dir
    return model_dirs


def checkpoint_values(model_dir, step):
    reader = tf.train.load_checkpoint(os.path.join(model_dir, f"model.ckpt-{step}"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def changed_variables(model_dir, prefix):
    """Whether each variable under ``prefix`` (optimizer slots aside) differs between steps 0 and 3."""
    before, after = checkpoint_values(model_dir, 0), checkpoint_values(model_dir, 3)
    return {name: not np.array_equal(before[name], after[name])
            for name in before if name.startswith(prefix) and not name.split("/")[-1].startswith("Adam")}


def test_frozen_module_keeps_every_variable_while_the_head_learns(trained):
    module_changes = changed_variables(trained[False], MODULE_PREFIX)
    assert len(module_changes) == MODULE_VARIABLES and not any(module_changes.values())
    assert changed_variables(trained[False], "head/") == {"head/logits/kernel": True, "head/logits/bias": True}
    # Not in the trainable set, so Adam made no slots for them.
    names = checkpoint_values(trained[False], 3)
    assert not [name for name in names if name.startswith(MODULE_PREFIX) and "Adam" in name]


def test_fine_tuning_changes_every_module_variable_and_the_head(trained):
    module_changes = changed_variables(trained[True], MODULE_PREFIX)
    assert len(module_changes) == MODULE_VARIABLES and all(module_changes.values())  # averages too: UPDATE_OPS ran
    assert changed_variables(trained[True], "head/") == {"head/logits/kernel": True, "head/logits/bias": True}


@pytest.fixture(scope="module")
def exported_module(trained, tmp_path_factory):
    """The feature extractor of the fine-tuned model after 3 steps, as a hub module."""
    module_dir = str(tmp_path_factory.mktemp("hub") / "module")
    checkpoint = os.path.join(trained[True], "model.ckpt-3")
    model_fn.export_feature_extractor(make_params(fine_tuning=True), checkpoint, module_dir)
    return module_dir


def test_exported_feature_extractor_reproduces_the_trained_features(trained, exported_module):
    images = tf.constant(np.random.RandomState(2).uniform(size=[2, IMAGE_SIZE, IMAGE_SIZE, 3]), tf.float32)
    exported = hub.Module(exported_module, name="exported")(images)
    spec = feature_extractor.resolve(make_params()).spec
    trained_features = hub.Module(spec, name=model_fn.MODULE_SCOPE)(images)
    module_variables = [v for v in v1.global_variables() if v.op.name.startswith(MODULE_PREFIX)]
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        v1.train.Saver(module_variables).restore(session, os.path.join(trained[True], "model.ckpt-3"))
        expected, actual = session.run([trained_features, exported])
    np.testing.assert_allclose(actual, expected, rtol=1e-5)


def test_a_new_run_starts_from_the_exported_module(trained, exported_module, tmp_path):
    params = make_params(hub_module=exported_module, fine_tuning=False)
    config = tf.estimator.RunConfig(log_step_count_steps=None)
    tf.estimator.Estimator(model_fn.model_fn, str(tmp_path), config, params).train(train_input_fn, max_steps=1)
    started_from, trained_values = checkpoint_values(str(tmp_path), 0), checkpoint_values(trained[True], 3)
    module_names = [name for name in trained_values if name.startswith(MODULE_PREFIX) and "Adam" not in name]
    assert len(module_names) == MODULE_VARIABLES
    for name in module_names:
        np.testing.assert_array_equal(started_from[name], trained_values[name])


def test_exported_module_follows_tfhub_conventions(exported_module):
    """What code written for tfhub.dev image modules does works on an exported model."""
    spec = hub.load_module_spec(exported_module)
    assert hub.get_expected_image_size(spec) == [IMAGE_SIZE, IMAGE_SIZE]
    assert set(spec.get_tags()) == {frozenset(), frozenset({"train"})}
    assert set(spec.get_signature_names()) == {"default", "image_feature_vector"}
    images = tf.constant(np.random.RandomState(3).uniform(size=[2, IMAGE_SIZE, IMAGE_SIZE, 3]), tf.float32)
    outputs = hub.Module(spec)(images, signature="image_feature_vector", as_dict=True)
    assert outputs["default"].shape.as_list() == [2, 64]
    assert outputs["small_cnn/conv4"].shape.as_list() == [2, IMAGE_SIZE // 4, IMAGE_SIZE // 4, 64]
    assert not os.path.exists(os.path.join(exported_module, "random_weights.txt"))


# --- tower replication (library/distribution/towers.py) ---

TWO_CPUS = v1.ConfigProto(device_count={"CPU": 2}, allow_soft_placement=True)


def one_step_values(params, checkpoint, devices=()):
    """({variable: value} after one SGD step on the fixed batch, from ``checkpoint`` (written first if missing), the
    number of UPDATE_OPS), the model_fn replicated over ``devices`` if any. Restoring by name needs the same names."""
    with tf.Graph().as_default():
        features, labels = fixed_batch()
        function = towers.replicate_model_fn(model_fn.model_fn, devices) if devices else model_fn.model_fn
        spec = function(features, labels, ModeKeys.TRAIN, params)
        saver = v1.train.Saver()
        with v1.Session(config=TWO_CPUS) as session:
            if os.path.exists(checkpoint + ".index"):
                saver.restore(session, checkpoint)
            else:
                session.run(v1.global_variables_initializer())
                saver.save(session, checkpoint)
            session.run(spec.train_op)
            values = {variable.op.name: session.run(variable) for variable in v1.global_variables()}
            return values, len(v1.get_collection(v1.GraphKeys.UPDATE_OPS))


@pytest.mark.parametrize("fine_tuning", [False, True])
def test_two_towers_share_one_module_and_step_as_one_device(tmp_path, fine_tuning):
    """Frozen module: the same step as one device. Fine-tuned: batch norm normalizes each tower's half by its own
    statistics, so only the names (and one module, not one per tower) are compared."""
    params = make_params(fine_tuning=fine_tuning, optimizer="SGD", learning_rate=0.5, dropout_rate=0.0)
    checkpoint = str(tmp_path / "start")
    one, one_updates = one_step_values(params, checkpoint)
    two, two_updates = one_step_values(params, checkpoint, ("/cpu:0", "/cpu:1"))

    assert sorted(two) == sorted(one)
    assert len([name for name in two if name.startswith(MODULE_PREFIX)]) == MODULE_VARIABLES
    assert two["global_step"] == one["global_step"] == 1
    assert two_updates == one_updates == (10 if fine_tuning else 0)  # the first tower's moving-average updates
    if not fine_tuning:
        for name in one:
            np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-6, err_msg=name)
        with tf.Graph().as_default():
            start = tf.train.load_variable(checkpoint, HEAD_KERNEL)
        assert not np.allclose(one[HEAD_KERNEL], start)  # the step did train the head
