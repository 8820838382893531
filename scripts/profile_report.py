"""Print the profile tables (top ops, GPU kernels, step time) of a finished run.

Usage, from the repository root:

    python scripts/profile_report.py RUN_DIR            # the run's latest capture
    python scripts/profile_report.py RUN_DIR --all      # every capture, oldest first
    python scripts/profile_report.py path/to/host.xplane.pb --top 10

RUN_DIR can be a run directory, any folder above it, or one
`plugins/profile/<session>` folder. Nothing is written next to the capture.
Exit status: 0 on success, 2 if the path is missing or empty or holds no
capture, 1 if xprof cannot convert a capture.
"""

import argparse
import os
import sys
from pathlib import Path

# xprof's converters log spurious C++ errors ("No UnifiedProfileProcessor
# registered ...") to stderr; keep the report clean unless the caller says otherwise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.callbacks import profile_render, profile_xprof  # noqa: E402  (needs the repo root on sys.path)


def main(argv: list[str] | None = None) -> int:
    """Runs the report.

    Args:
        argv: Command-line arguments without the program name (default: sys.argv[1:]).

    Returns:
        The process exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", help="run dir, plugins/profile/<session> folder or .xplane.pb file")
    parser.add_argument("--top", type=int, default=20, help="ops and kernels to show (default 20)")
    parser.add_argument("--all", action="store_true", help="report every capture, not the latest")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error(f"--top must be >= 1, got {args.top}")

    if not args.path.strip():
        return _error("the path is empty: give a run dir, a session folder or a .xplane.pb file", 2)
    try:
        captures = profile_xprof.find_captures(args.path)
    except (FileNotFoundError, ValueError) as e:
        return _error(str(e), 2)
    if not captures:
        return _error(f"no profiler capture (*.xplane.pb) under {args.path}", 2)

    for i, capture in enumerate(captures if args.all else captures[-1:]):
        try:
            tables = profile_xprof.build_tables(capture, top=args.top)
        except ValueError as e:
            return _error(str(e), 2)
        except RuntimeError as e:
            return _error(str(e), 1)
        print(("\n" if i else "") + profile_render.format_tables(tables))
    return 0


def _error(message: str, status: int) -> int:
    print(f"profile_report: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
