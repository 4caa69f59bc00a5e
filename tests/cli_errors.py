"""A script's bad options end it with one line on stderr and exit status 2 (a shared check)."""

import contextlib
import io
from typing import Callable, List, Optional, Sequence, Tuple

import absl.testing.absltest


def assert_one_line_errors(test: absl.testing.absltest.TestCase,
                           main: Callable[[Optional[List[str]]], None],
                           cases: Sequence[Tuple[List[str], str]]) -> None:
  """For each (argv, message): main(argv) exits with status 2 and prints exactly one line,
  containing `message`."""
  for argv, message in cases:
    with test.subTest(argv=argv):
      err = io.StringIO()
      with test.assertRaises(SystemExit) as exit_, contextlib.redirect_stderr(err):
        main(argv)
      test.assertEqual(exit_.exception.code, 2)
      test.assertLen(err.getvalue().strip().splitlines(), 1, err.getvalue())
      test.assertIn(message, err.getvalue())
