"""`python -m benchmarks`: benchmark.py's command line (its --help says what it measures)."""
from benchmarks.benchmark import main

if __name__ == "__main__":
    main()
