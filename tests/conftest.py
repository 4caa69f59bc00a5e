import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests import the top-level scripts (train.py, evaluate.py) from the repo root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
