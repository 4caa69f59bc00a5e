"""`python -m l2l.versatile`: list the shipped pretrained optimizers, or ship one
(l2l.versatile.zoo).

The arguments are checked before TensorFlow loads (`--help` is fast), which then loads
quietly (`l2l.cli.start_tensorflow`); a source that is not a saved optimizer is a one-line error.
"""

import argparse
import sys


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog="python -m l2l.versatile",
                                   description="List the pretrained optimizers, or ship one.")
  parser.add_argument("--ship", metavar="SAVE_PATH", help="train.py save_path to ship")
  parser.add_argument("--name")
  parser.add_argument("--description")
  parser.add_argument("--command", help="the command that trained it")
  parser.add_argument("--horizon", type=int)
  parser.add_argument("--recommended", action="store_true")
  args = parser.parse_args(argv)
  if args.ship and not (args.name and args.description and args.command):
    parser.error("--ship needs --name, --description and --command")
  from l2l import cli  # pylint: disable=g-import-not-at-top
  cli.start_tensorflow()  # Without its start-up chatter.
  from l2l.versatile import zoo  # pylint: disable=g-import-not-at-top
  if args.ship:
    try:
      print(zoo.ship(args.ship, args.name, args.description, args.command, args.horizon,
                     args.recommended))
    except (ValueError, TypeError, OSError) as e:
      sys.exit(f"{parser.prog}: error: --ship {args.ship}: {e}")
    return
  for name in zoo.available():
    data = zoo.info(name)
    print(f"{name}{' (recommended)' if data.get('recommended') else ''}: {data['description']}")


if __name__ == "__main__":
  main()
