"""The Estimator model_fn: a hub.Module feature extractor under a dropout + dense classification head.

``params`` holds every option (project.options) plus what the run loop adds:
``num_classes``, ``class_names``, and for training ``steps_per_epoch`` and ``train_steps``.
``features["image"]`` is float32 [batch, S, S, 3] in [0, 255] with S from
``feature_extractor.input_image_size``; ``labels`` are int32 or int64 class ids [batch].
Other features (the file name in batch prediction) are passed through to the predictions.

The features are the output of the module signature that ``feature_extractor`` picks
(TF Hub's ``image_feature_vector`` convention, or ``hub_signature`` / ``hub_output``).
fine_tuning False: the module is instantiated untrainable with its inference graph, so
its variables, batch-norm moving averages included, stay as loaded; only the head learns.
fine_tuning True: in training the module's ``train`` graph runs (batch statistics) and its
moving-average updates join the train op with the other UPDATE_OPS; the module's own
regularization losses (imported by hub.Module when trainable) join the loss. A module
without a ``train`` variant is fine-tuned through its inference graph.
"""

from library import hub_module
from library.tensorflow_env import import_tensorflow
from project import feature_extractor, preprocessing
from project.networks import layers

tf = import_tensorflow()
import tensorflow_hub as hub  # noqa: E402 (after TensorFlow's quiet import)

v1 = tf.compat.v1
ModeKeys = tf.estimator.ModeKeys

MODULE_SCOPE = "feature_extractor"  # Variable scope of the module in the graph and the checkpoints.
HEAD_SCOPE = "head"
SUMMARY_IMAGES = 3
TOP_K = 5

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
    images = preprocessing.to_module_range(features["image"])
    logits = classification_head(extract_features(images, training, params), training, params)
    if mode == ModeKeys.PREDICT:
        other_features = {name: value for name, value in features.items() if name != "image"}
        return predict_spec(logits, params["class_names"], other_features)
    cross_entropy, weight_decay = loss_terms(labels, logits, params)
    module_regularization = tf.identity(v1.losses.get_regularization_loss(), name="module_regularization")
    loss = cross_entropy + weight_decay + module_regularization
    if mode == ModeKeys.EVAL:
        metrics = eval_metrics(labels, logits, params["num_classes"])
        return tf.estimator.EstimatorSpec(mode, loss=loss, eval_metric_ops=metrics)
    v1.summary.scalar("loss", loss)
    v1.summary.scalar("loss/cross_entropy", cross_entropy)
    v1.summary.scalar("loss/weight_decay", weight_decay)
    v1.summary.scalar("loss/module_regularization", module_regularization)
    correct = tf.equal(tf.argmax(logits, 1, output_type=labels.dtype), labels)
    v1.summary.scalar("accuracy", tf.reduce_mean(tf.cast(correct, tf.float32)))
    v1.summary.image("images", images, max_outputs=SUMMARY_IMAGES)
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op(loss, params))


def extract_features(images, training, params):
    """Features [batch, D] of the module ``params["hub_module"]``, trainable when fine-tuning."""
    extractor = feature_extractor.resolve(params)
    fine_tuning, use = params["fine_tuning"], extractor.use
    module = hub.Module(
        extractor.spec,
        trainable=fine_tuning,
        tags=hub_module.TRAIN_TAGS if training and fine_tuning and use.has_train_variant else None,
        name=MODULE_SCOPE,
    )
    return module({use.input_name: images}, signature=use.signature, as_dict=True)[use.output]


def classification_head(features, training, params):
    """Logits [batch, num_classes]: dropout (training only), then a dense layer."""
    with v1.variable_scope(HEAD_SCOPE):
        if training:
            features = tf.nn.dropout(features, rate=params["dropout_rate"])
        return layers.dense(features, params["num_classes"], "logits")


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
    """One optimizer step on the trainable variables, running the batch-norm UPDATE_OPS with it."""
    global_step = v1.train.get_or_create_global_step()
    rate = learning_rate(params, global_step)
    v1.summary.scalar("learning_rate", rate)
    optimizer = with_mixed_precision(_OPTIMIZERS[params["optimizer"]](rate, params), params)
    with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
        return optimizer.minimize(loss, global_step=global_step)


def learning_rate(params, global_step):
    """``learning_rate`` as ``learning_rate_schedule`` shapes it over the run's ``train_steps``."""
    schedule = params["learning_rate_schedule"]
    initial = params["learning_rate"]
    if schedule == "cosine":
        return v1.train.cosine_decay(initial, global_step, params["train_steps"])
    if schedule == "exponential":
        return v1.train.exponential_decay(
            initial, global_step, params["steps_per_epoch"], params["learning_rate_decay"], staircase=True
        )
    return tf.constant(initial)


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


def predict_spec(logits, class_names, passed_through):
    """Class id, class name, probabilities and ``passed_through``, also as the SavedModel's serving signature."""
    class_id = tf.argmax(logits, 1)
    predictions = {
        **passed_through,
        "class_id": class_id,
        "class_name": tf.gather(tf.constant(class_names), class_id),
        "probabilities": tf.nn.softmax(logits),
    }
    serving_key = v1.saved_model.signature_constants.DEFAULT_SERVING_SIGNATURE_DEF_KEY
    return tf.estimator.EstimatorSpec(
        ModeKeys.PREDICT,
        predictions=predictions,
        export_outputs={serving_key: tf.estimator.export.PredictOutput(predictions)},
    )


def export_feature_extractor(params, checkpoint_path, output_dir):
    """Write the feature extractor of a checkpoint of this model as a TF1 Hub module (for transfer learning)."""
    hub_module.export_from_checkpoint(feature_extractor.resolve(params).spec, checkpoint_path, output_dir, MODULE_SCOPE)
