"""The Estimator model_fn: a hub.Module feature extractor under a dropout + dense classification head.

``params`` holds every option (project.options) plus what the run loop adds:
``num_classes``, ``class_names``, and for training ``steps_per_epoch`` and ``train_steps``.
``features["image"]`` is float32 [batch, S, S, 3] in [0, 255] with S from
``feature_extractor.input_image_size``; ``labels`` are int32 or int64 class ids [batch].
Other features (the file name in batch prediction) are passed through to the predictions.
With ``cache_features`` the input gives the frozen module's features instead of the image
(``features[CACHED_FEATURES]``, ``project/cached_features.py``); the graph then holds the
same variables, so the checkpoints are the full model's.
In evaluation the metrics also hold what the evaluation report (``library/evaluation/report.py``)
is made of: the confusion matrix and the most confidently wrong images.

The features are the output of the module signature that ``feature_extractor`` picks
(TF Hub's ``image_feature_vector`` convention, or ``hub_signature`` / ``hub_output``).
fine_tuning False: the module is instantiated untrainable with its inference graph, so
its variables, batch-norm moving averages included, stay as loaded; only the head learns.
fine_tuning True: the module's variables train too, and its own regularization losses
(imported by hub.Module when trainable) join the loss. With ``fine_tuning_batch_norm`` train,
in training the module's ``train`` graph runs (batch statistics) and its moving-average
updates join the train op with the other UPDATE_OPS (a module without a ``train`` variant
is fine-tuned through its inference graph); with frozen, the inference graph runs, its
stored statistics untouched (project/fine_tuning.py). The module's variables learn at
``module_learning_rate_multiplier`` times the head's rate (one optimizer per part,
``library/training/part_optimizers.py``).
"""

from library.distribution import towers
from library.hub import hub_module
from library.training import part_optimizers
from library.tensorflow_env import import_tensorflow
from project import feature_extractor, preprocessing
from project.networks import layers

tf = import_tensorflow()
import tensorflow_hub as hub  # noqa: E402 (after TensorFlow's quiet import)

v1 = tf.compat.v1
ModeKeys = tf.estimator.ModeKeys

MODULE_SCOPE = "feature_extractor"  # Variable scope of the module in the graph and the checkpoints.
HEAD_SCOPE = "head"
LOGITS_LAYER = "logits"
LOGITS_KERNEL = f"{HEAD_SCOPE}/{LOGITS_LAYER}/kernel"  # [features, classes]: its shape says what a checkpoint is for
SUMMARY_IMAGES = 3
TOP_K = 5
MISTAKES = 16  # Most confidently wrong images kept by an evaluation.
MISTAKE_THUMBNAIL = 96  # Longest edge of a kept mistake image; larger ones are scaled down.
CACHED_FEATURES = "cached_features"  # features[...] of the module's output computed beforehand (cache_features)

_OPTIMIZERS = {
    "Adam": lambda learning_rate, params: v1.train.AdamOptimizer(
        learning_rate, beta1=params["adam_beta1"], beta2=params["adam_beta2"], epsilon=params["adam_epsilon"]
    ),
    "Momentum": lambda learning_rate, params: v1.train.MomentumOptimizer(learning_rate, params["momentum"]),
    "SGD": lambda learning_rate, params: v1.train.GradientDescentOptimizer(learning_rate),
}


def model_fn(features, labels, mode, params):
    """The EstimatorSpec of ``mode`` for classifying ``features["image"]`` into ``params["num_classes"]`` classes."""
    training = mode == ModeKeys.TRAIN
    logits = classification_head(extract_features(features, training, params), training, params)
    if mode == ModeKeys.PREDICT:
        other_features = {name: value for name, value in features.items() if name not in ("image", CACHED_FEATURES)}
        return predict_spec(logits, params["class_names"], other_features, params["top_k"])
    cross_entropy, weight_decay = loss_terms(labels, logits, params)
    module_regularization = tf.identity(v1.losses.get_regularization_loss(), name="module_regularization")
    loss = cross_entropy + weight_decay + module_regularization
    if mode == ModeKeys.EVAL:
        metrics = {**eval_metrics(labels, logits, params["num_classes"]),
                   **report_metrics(labels, logits, features, params["num_classes"])}
        return tf.estimator.EstimatorSpec(mode, loss=loss, eval_metric_ops=metrics)
    v1.summary.scalar("loss", loss)
    v1.summary.scalar("loss/cross_entropy", cross_entropy)
    v1.summary.scalar("loss/weight_decay", weight_decay)
    v1.summary.scalar("loss/module_regularization", module_regularization)
    correct = tf.equal(tf.argmax(logits, 1, output_type=labels.dtype), labels)
    v1.summary.scalar("accuracy", tf.reduce_mean(tf.cast(correct, tf.float32)))
    if "image" in features:
        v1.summary.image("images", preprocessing.to_module_range(features["image"]), max_outputs=SUMMARY_IMAGES)
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op(loss, params))


def extract_features(features, training, params):
    """Features [batch, D] of the module ``params["hub_module"]`` (trainable when fine-tuning) on
    ``features["image"]``, or the module's features cached beforehand (``features[CACHED_FEATURES]``,
    project/cached_features.py): the module's variables are created either way, so checkpoints hold the whole model."""
    module = feature_module(training, params)
    if CACHED_FEATURES in features:
        return features[CACHED_FEATURES]
    return apply_module(module, features["image"], params)


def feature_module(training, params):
    """The hub.Module of ``params["hub_module"]`` in this graph, trainable when fine-tuning."""
    extractor = feature_extractor.resolve(params)
    batch_statistics = training and feature_extractor.trains_batch_norm(params) and extractor.use.has_train_variant
    return towers.create_once(MODULE_SCOPE, lambda: hub.Module(  # one module, one set of variables, for all towers
        extractor.spec,
        trainable=params["fine_tuning"],
        tags=hub_module.TRAIN_TAGS if batch_statistics else None,
        name=MODULE_SCOPE,
    ))


def apply_module(module, images, params):
    """The features [batch, D] ``module`` gives for float32 images [batch, S, S, 3] in [0, 255]."""
    use = feature_extractor.resolve(params).use
    return module({use.input_name: preprocessing.to_module_range(images)}, signature=use.signature, as_dict=True)[use.output]


def classification_head(features, training, params):
    """Logits [batch, num_classes]: dropout (training only), then a dense layer."""
    with v1.variable_scope(HEAD_SCOPE):
        if training:
            features = tf.nn.dropout(features, rate=params["dropout_rate"])
        return layers.dense(features, params["num_classes"], LOGITS_LAYER)


def loss_terms(labels, logits, params):
    """(softmax cross-entropy with label smoothing, L2 weight decay of the trainable weights).

    Weights are the trainable variables of rank 2 and more (convolution and dense
    kernels); biases and batch-norm scales and offsets are not decayed. The decay is
    ``l2_regularization * sum(w ** 2) / 2`` (``tf.nn.l2_loss``), whose gradient is ``l2_regularization * w``.
    """
    cross_entropy = v1.losses.softmax_cross_entropy(
        tf.one_hot(labels, params["num_classes"]), logits, label_smoothing=params["xentropy_label_smoothing"]
    )
    weights = [variable for variable in v1.trainable_variables() if variable.shape.rank >= 2]
    weight_decay = params["l2_regularization"] * tf.add_n([tf.nn.l2_loss(weight) for weight in weights])
    return cross_entropy, weight_decay


def train_op(loss, params):
    """One optimizer step on the trainable variables, running the batch-norm UPDATE_OPS with it.

    Under tower replication (``library.distribution.towers``) the towers share one optimizer (one loss scale
    with mixed precision), each records its gradients and one step applies their average, with
    the first tower's UPDATE_OPS.
    """
    global_step = v1.train.get_or_create_global_step()
    rate = learning_rate(params, global_step)
    v1.summary.scalar("learning_rate", rate)
    optimizer = towers.optimizer(lambda: with_mixed_precision(optimizer_of_parts(rate, params), params))
    with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
        return optimizer.minimize(loss, global_step=global_step)


def optimizer_of_parts(rate, params):
    """The optimizer at ``rate``; when fine-tuning at another rate for the module, one for the module's variables at
    ``module_learning_rate_multiplier`` times ``rate`` and one for the rest (the head)."""
    make = _OPTIMIZERS[params["optimizer"]]
    multiplier = params["module_learning_rate_multiplier"]
    if not params["fine_tuning"] or multiplier == 1:
        return make(rate, params)
    return part_optimizers.PartOptimizers({MODULE_SCOPE + "/": make(rate * multiplier, params), "": make(rate, params)})


def learning_rate(params, global_step):
    """``learning_rate`` as ``learning_rate_schedule`` shapes it over the run's ``train_steps``, rising linearly from
    0 over the first ``learning_rate_warmup_epochs``."""
    schedule = params["learning_rate_schedule"]
    initial = params["learning_rate"]
    if schedule == "cosine":
        rate = v1.train.cosine_decay(initial, global_step, params["train_steps"])
    elif schedule == "exponential":
        rate = v1.train.exponential_decay(
            initial, global_step, params["steps_per_epoch"], params["learning_rate_decay"], staircase=True
        )
    else:
        rate = tf.constant(initial)
    warmup_steps = params["learning_rate_warmup_epochs"] * params["steps_per_epoch"]
    if warmup_steps <= 0:
        return rate
    progress = tf.cast(global_step + 1, tf.float32) / warmup_steps  # the first step already learns a little
    return rate * tf.minimum(1.0, progress)


def with_mixed_precision(optimizer, params):
    """``optimizer`` with float16 compute and dynamic loss scaling on GPUs when ``mixed_precision`` asks for it.

    CPUs gain nothing from float16, so there it stays float32 with a warning.
    """
    if not params["mixed_precision"]:
        return optimizer
    if not tf.config.list_physical_devices("GPU"):
        tf.get_logger().warning("mixed_precision ignored: no GPU here, training in float32")
        return optimizer
    return v1.mixed_precision.enable_mixed_precision_graph_rewrite(optimizer, loss_scale="dynamic")


def eval_metrics(labels, logits, num_classes):
    """Accuracy, mean per-class accuracy, and top-5 accuracy where there are more than 5 classes."""
    predicted = tf.argmax(logits, 1, output_type=labels.dtype)
    metrics = {
        "accuracy": v1.metrics.accuracy(labels, predicted),
        "mean_per_class_accuracy": v1.metrics.mean_per_class_accuracy(labels, predicted, num_classes),
    }
    if num_classes > TOP_K:
        metrics[f"top_{TOP_K}_accuracy"] = v1.metrics.mean(v1.nn.in_top_k(logits, labels, TOP_K))
    return metrics


def report_metrics(labels, logits, features, num_classes):
    """The evaluation report's raw material, streamed over the evaluation in the same pass as the other metrics.

    ``confusion_matrix``: int64 counts [true class, predicted class]. ``mistakes/*``: the
    ``MISTAKES`` wrong predictions with the highest predicted-class probability, most confident
    first (``probability`` -1 marks an empty slot): ``image`` (uint8 thumbnails), ``label``,
    ``prediction``, and ``filename`` when the input gives file names.
    """
    predicted = tf.argmax(logits, 1)
    labels = tf.cast(labels, tf.int64)
    counts = _metric_variable("confusion_matrix", tf.zeros([num_classes, num_classes], tf.int64))
    batch_counts = tf.math.confusion_matrix(labels, predicted, num_classes, dtype=tf.int64)
    metrics = {"confusion_matrix": (tf.identity(counts), counts.assign_add(batch_counts))}
    confidence = tf.reduce_max(tf.nn.softmax(logits), 1)
    batch = {
        "probability": tf.where(tf.equal(predicted, labels), tf.fill(tf.shape(confidence), -1.0), confidence),
        "label": labels,
        "prediction": predicted,
        "image": features["image"],
    }
    if "filename" in features:
        batch["filename"] = features["filename"]
    # This batch's worst first, so that only the few candidates are scaled down.
    batch = _most_probable(batch, tf.minimum(MISTAKES, tf.shape(confidence)[0]))
    batch["image"] = thumbnails(batch["image"])
    kept = {
        name: _metric_variable(f"mistakes_{name}", tf.fill([MISTAKES], -1.0) if name == "probability"
                               else tf.zeros([MISTAKES, *value.shape[1:]], value.dtype))
        for name, value in batch.items()
    }
    merged = _most_probable({name: tf.concat([kept[name], batch[name]], 0) for name in kept}, MISTAKES)
    update = tf.group(*[kept[name].assign(merged[name]) for name in kept])
    metrics.update({f"mistakes/{name}": (tf.identity(variable), update) for name, variable in kept.items()})
    return metrics


def _metric_variable(name, initial_value):
    """A local variable reset at the start of each evaluation, like those of tf.compat.v1.metrics."""
    with v1.variable_scope("evaluation_report"):
        return v1.get_variable(name, initializer=initial_value, trainable=False,
                               collections=[v1.GraphKeys.LOCAL_VARIABLES, v1.GraphKeys.METRIC_VARIABLES])


def _most_probable(fields, count):
    """The ``count`` rows of every field with the highest ``probability``, highest first (earlier rows win ties)."""
    rows = tf.math.top_k(fields["probability"], count, sorted=True).indices
    return {name: tf.gather(value, rows) for name, value in fields.items()}


def thumbnails(images):
    """float32 [0, 255] images as uint8, scaled down to at most ``MISTAKE_THUMBNAIL`` pixels on the longer edge."""
    height, width = images.shape[1:3]
    scale = MISTAKE_THUMBNAIL / max(height, width)
    if scale < 1:
        images = tf.image.resize(images, [round(height * scale), round(width * scale)], antialias=True)
    return tf.cast(tf.round(tf.clip_by_value(images, 0, 255)), tf.uint8)


def predict_spec(logits, class_names, passed_through, top_k=0):
    """Class id, class name, probabilities and ``passed_through``, also as the SavedModel's serving signature.

    With ``top_k`` also the names and probabilities of the ``top_k`` most probable classes, most probable first.
    """
    class_id = tf.argmax(logits, 1)
    probabilities = tf.nn.softmax(logits)
    names = tf.constant(class_names)
    predictions = {
        **passed_through,
        "class_id": class_id,
        "class_name": tf.gather(names, class_id),
        "probabilities": probabilities,
    }
    if top_k:
        top = tf.math.top_k(probabilities, top_k)
        predictions.update(top_k_class_names=tf.gather(names, top.indices), top_k_probabilities=top.values)
    serving_key = v1.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY
    return tf.estimator.EstimatorSpec(
        ModeKeys.PREDICT,
        predictions=predictions,
        export_outputs={serving_key: tf.estimator.export.PredictOutput(predictions)},
    )


def export_feature_extractor(params, checkpoint_path, output_dir):
    """Write the feature extractor of a checkpoint of this model as a TF1 Hub module (for transfer learning)."""
    hub_module.export_from_checkpoint(feature_extractor.resolve(params).spec, checkpoint_path, output_dir, MODULE_SCOPE)
