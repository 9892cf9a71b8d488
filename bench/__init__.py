"""ferkit's benchmarks (speed/), experiments (experiments/) and maintainer tools (tools/). Run each
from the repository's root as a module: `.venv/bin/python -m bench.speed.classifier_vs_fer --help`."""
