"""`python -m gpt` says where the command lines are (they live in examples/, beside the package)."""
import sys

print("gpt has no command line of its own; in the repository, run\n"
      "  python examples/train_shakespeare.py --help   # train a GPT (README: 'Training a GPT')\n"
      "  python examples/sample.py --help              # sample from a trained one", file=sys.stderr)
sys.exit(2)
