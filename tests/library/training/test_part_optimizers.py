"""library.training.part_optimizers: one optimizer per part of the variables, one training step."""

import pytest

from library.training.part_optimizers import PartOptimizers
from tests.helpers import tf

v1 = tf.compat.v1


def test_each_part_steps_with_its_own_optimizer_and_the_global_step_once():
    network = v1.get_variable("network/kernel", initializer=[1.0, -2.0])
    deeper = v1.get_variable("network/top/kernel", initializer=[5.0])
    head = v1.get_variable("head/kernel", initializer=[3.0])
    loss = tf.reduce_sum(network ** 2) + tf.reduce_sum(deeper ** 2) + tf.reduce_sum(head ** 2)
    step = v1.train.get_or_create_global_step()
    optimizer = PartOptimizers({"network/": v1.train.AdamOptimizer(0.01), "network/top/": v1.train.AdamOptimizer(0.5),
                                "": v1.train.GradientDescentOptimizer(0.1)})
    train_op = optimizer.minimize(loss, global_step=step)
    with v1.Session() as session:
        session.run(v1.global_variables_initializer())
        session.run(train_op)
        values = session.run({"network": network, "deeper": deeper, "head": head, "step": step})
    # Adam's first step moves a weight by its learning rate against the gradient; plain SGD by rate x gradient.
    assert values["network"] == pytest.approx([0.99, -1.99], abs=1e-6)
    assert values["deeper"] == pytest.approx([4.5], abs=1e-6)  # the longest matching prefix wins
    assert values["head"] == pytest.approx([3.0 - 0.1 * 6.0], abs=1e-6)
    assert values["step"] == 1


def test_a_variable_of_no_part_is_refused_naming_it():
    weight = v1.get_variable("other/kernel", initializer=[1.0])
    optimizer = PartOptimizers({"network/": v1.train.AdamOptimizer(0.01)})
    with pytest.raises(ValueError, match="variable other/kernel is in no part of the optimizer \\(network/\\)"):
        optimizer.minimize(tf.reduce_sum(weight ** 2))
