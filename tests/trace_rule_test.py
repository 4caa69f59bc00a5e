"""bench.trace_rule: the shipped optimizer stepped by hand, its per-step values saved."""

import io
import os
from contextlib import redirect_stdout

import numpy as np
import tensorflow as tf

from bench import trace_rule
from l2l import evaluation
from l2l.capture import Problem
from problems.suite import suite


class TraceRuleTest(tf.test.TestCase):

  def test_trace_saves_each_step_and_matches_the_problem(self):
    path = os.path.join(self.get_temp_dir(), "trace.npy")
    out = io.StringIO()
    with redirect_stdout(out):
      trace_rule.main(["--task=tiny_blobs_mlp_relu_8", "--steps=6", "--every=3", "--runs=2",
                       "--split=VALIDATION", f"--save={path}", '--options={"quiet_gate": 0.1}'])
    trace = np.load(path)
    task = [t for t in suite("smoke") if t.name == "tiny_blobs_mlp_relu_8"][0]
    problem = Problem(task.make_problem(evaluation.instance_seed(0, evaluation.VALIDATION)))
    num_tensors = len(problem.param_specs)
    self.assertEqual(trace.shape, (2, 6, 4 + num_tensors))
    self.assertTrue(np.all(np.isfinite(trace)))
    self.assertAllClose(trace[..., 3], trace[..., 4:].max(axis=-1))  # The largest update.
    self.assertGreater(trace[0, 0, 0], trace[0, -1, 0])  # The loss went down.
    self.assertEqual(out.getvalue().count("loss"), 4)  # 2 runs x 6 steps / 3.
