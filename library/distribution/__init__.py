"""Several devices and machines: tf.distribute strategies, TF_CONFIG, towers, a local cluster."""
