"""Prints the l2l-vs-ivy table: every case of reference.json, l2l's largest relative difference.

    python tests/ivy_reference/compare.py > tests/ivy_reference/comparison.md

Runs l2l (the l2l venv, not ivy's) on the cases stored by make_reference.py, through the same
functions as tests/maml_step_test.py.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(os.path.dirname(HERE)), os.path.dirname(HERE)]

import maml_step_test  # pylint: disable=g-import-not-at-top


def main():
  with open(os.path.join(HERE, "reference.json")) as f:
    reference = json.load(f)
  columns = ["method", "batched", "average_across_steps", "subset", "return_inner_v",
             "stop_gradients", "batch_fns", "outer_cost", "steps", "num_tasks", "pass_num_tasks"]
  subsets = {i: ("inner_v=%s keep=%s, outer_v=%s keep=%s" % s).replace("'", "")
             for i, s in enumerate(maml_step_test.GRID_SUBSETS)}
  print(f"l2l against ivy {reference['ivy']} (torch {reference['torch']}), float64, "
        f"{len(reference['cases'])} cases; largest relative difference over cost, grads and "
        "returned inner variables.\n")
  print("| # | " + " | ".join(columns) + " | largest difference |")
  print("|" + "---|" * (len(columns) + 2))
  worst = 0.
  for i, case in enumerate(reference["cases"]):
    difference = max(maml_step_test.grid_differences(
        case, maml_step_test.run_grid_case(case)).values())
    worst = max(worst, difference)
    cells = [subsets[case[c]] if c == "subset" and c in case else str(case.get(c, "-"))
             for c in columns]
    print(f"| {i} | " + " | ".join(cells) + f" | {difference:.1e} |")
  print(f"\nLargest difference over all {len(reference['cases'])} cases: {worst:.1e}")


if __name__ == "__main__":
  main()
