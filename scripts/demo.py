"""The main job: synthetic data -> train -> evaluate -> infer with the bundle's configs (a few minutes on 2 cores).

    python -m scripts.demo [--output-dir outputs/demo] [--epochs 30]
"""

from __future__ import annotations

import argparse
import logging

from bundle.demo import DemoSettings, run_demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default="outputs/demo", help="where data, checkpoints and results go")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--volumes", type=int, default=10, help="synthetic volumes to generate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = run_demo(DemoSettings(args.output_dir, n_volumes=args.volumes, epochs=args.epochs))
    print(f"\nMetrics on the synthetic test split ({results['metrics']}):\n")
    print(results["metrics"].read_text())
    for name, path in results.items():
        print(f"{name:12s} {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
