"""Runs ivy 0.0.9.16's maml_step / fomaml_step / reptile_step (torch backend) on a grid of options.

ivy is not an l2l dependency; run this in a separate virtual environment:

    python3 -m venv /tmp/ivy-venv
    /tmp/ivy-venv/bin/pip install ivy==0.0.9.16 torch==2.13.0
    /tmp/ivy-venv/bin/python tests/ivy_reference/make_reference.py

It writes tests/ivy_reference/reference.json: for every case its options, its inputs (float64,
generated here from a fixed NumPy seed) and ivy's outputs (cost, grads, returned inner
variables). tests/maml_step_test.py runs l2l on the same cases and compares. The cost functions
below have exact TensorFlow twins in that test (`grid_costs`); change both together.
"""

import itertools
import json
import os
import sys

import numpy as np

import ivy
from ivy.functional.ivy.gradients import _variable

ivy.set_backend("torch")

D, N = 3, 4  # Input size and examples per task (the first N // 2 support, the rest query).
SUBSETS = [  # (inner_v, keep_inner_v, outer_v, keep_outer_v)
    (None, True, None, True),
    (["w"], True, None, True),
    (["w"], False, None, True),
    (None, True, ["w", "s"], True),
    (None, True, ["b"], False),
    (["b", "s"], True, ["w", "b"], False),
]


def cost(batch, v):
  """Regression with a tanh feature; w: [T, D] and b: [T, 1] per task, s: [2] shared."""
  xw = ivy.sum(batch["x"] * ivy.expand_dims(v["w"], axis=1), axis=-1)  # [T, N]
  pred = v["s"][0] * ivy.tanh(xw + v["b"]) + v["s"][1] * xw
  return ivy.mean((pred - batch["y"]) ** 2)


def outer_cost(batch, v):
  """A different outer cost (so that inner and outer costs are told apart)."""
  return cost(batch, v) + 0.1 * ivy.mean(v["w"] ** 2)


def support(batch):
  return ivy.Container({"x": batch["x"][:, :N // 2], "y": batch["y"][:, :N // 2]})


def query(batch):
  return ivy.Container({"x": batch["x"][:, N // 2:], "y": batch["y"][:, N // 2:]})


def cases():
  """The grid: every combination of the main options, the others cycled through."""
  out = []
  main = itertools.product(("maml", "fomaml"), (True, False), (False, True), range(len(SUBSETS)),
                           (False, "first", "all"))
  for i, (method, batched, average, subset, ret) in enumerate(main):
    out.append(dict(method=method, batched=batched, average_across_steps=average, subset=subset,
                    return_inner_v=ret, stop_gradients=i % 2 == 0, batch_fns=i % 3 != 2,
                    outer_cost=["given", "none", "other"][i % 3], steps=[1, 3, 2, 0][i % 4],
                    num_tasks=[2, 3][(i // 2) % 2], pass_num_tasks=i % 5 == 0, lr=0.1))
  for batched, ret, steps, stop in itertools.product((True, False), (False, "first", "all"),
                                                     (1, 3), (True, False)):
    out.append(dict(method="reptile", batched=batched, return_inner_v=ret, steps=steps,
                    stop_gradients=stop, num_tasks=3 if steps == 3 else 2,
                    pass_num_tasks=not stop, lr=0.05))
  return out


def inputs(case, rng):
  t = case["num_tasks"]
  return ({"x": rng.normal(size=(t, N, D)), "y": rng.normal(size=(t, N))},
          {"w": rng.normal(size=(t, D)) * 0.5, "b": rng.normal(size=(t, 1)) * 0.5,
           "s": np.array([1.0, 0.3]) + rng.normal(size=2) * 0.1})


def to_lists(container):
  return {k: np.asarray(ivy.to_numpy(a), np.float64).tolist()
          for k, a in container.cont_to_iterator()}


def run(case, batch, variables):
  b = ivy.Container({k: ivy.array(a) for k, a in batch.items()})
  v = ivy.Container({k: _variable(ivy.array(a)) for k, a in variables.items()})
  kwargs = dict(batched=case["batched"], return_inner_v=case["return_inner_v"],
                stop_gradients=case["stop_gradients"],
                num_tasks=case["num_tasks"] if case["pass_num_tasks"] else None)
  if case["method"] == "reptile":
    return ivy.reptile_step(b, cost, v, case["steps"], case["lr"], **kwargs)
  inner_v, keep_inner_v, outer_v, keep_outer_v = SUBSETS[case["subset"]]
  kwargs.update(average_across_steps=case["average_across_steps"], inner_v=inner_v,
                keep_inner_v=keep_inner_v, outer_v=outer_v, keep_outer_v=keep_outer_v)
  if case["batch_fns"]:
    kwargs.update(inner_batch_fn=support, outer_batch_fn=query)
  outer = {"given": cost, "none": None, "other": outer_cost}[case["outer_cost"]]
  step = ivy.maml_step if case["method"] == "maml" else ivy.fomaml_step
  return step(b, cost, outer, v, case["steps"], case["lr"], **kwargs)


def main():
  rng = np.random.default_rng(17)
  results = []
  for case in cases():
    batch, variables = inputs(case, rng)
    ret = run(case, batch, variables)
    record = dict(case, batch={k: a.tolist() for k, a in batch.items()},
                  variables={k: a.tolist() for k, a in variables.items()},
                  cost=float(ivy.to_numpy(ret[0])), grads=to_lists(ret[1]), length=len(ret))
    if len(ret) == 3:
      record["inner_v"] = to_lists(ret[2]) if isinstance(ret[2], ivy.Container) else None
    results.append(record)
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.json")
  with open(path, "w") as f:
    json.dump({"ivy": ivy.__version__, "torch": __import__("torch").__version__,
               "python": sys.version.split()[0], "cases": results}, f, indent=0)
  print(f"wrote {len(results)} cases to {path}")


if __name__ == "__main__":
  main()
