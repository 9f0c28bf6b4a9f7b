# The two commands of the README:
#   make demo   set up .venv (with the dense extra: the demo runs the tiny COCO/ADE20K protocols) and run the
#               end-to-end demo (sslbench demo)
#   make test   set up .venv (with the dense extra) and run the test suite
# Both are idempotent; a second run reuses the environment, data, checkpoints and caches.
PY := .venv/bin/python
PYTEST_ARGS ?=

.PHONY: setup setup-dense demo test lint bench clean

setup:
	bash scripts/setup_env.sh

setup-dense:
	bash scripts/setup_env.sh --dense

demo: setup-dense
	.venv/bin/sslbench demo

test: setup-dense
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	.venv/bin/ruff check sslcore pretrain evaluate tests benchmarks sslbench_entry.py

# every CPU benchmark of docs/performance.md in turn, at its defaults (each prints its table; GPU rows where CUDA is)
BENCHMARKS := knn logreg linear_grid davis render loader_span pretrain_throughput finetune
bench: setup
	for b in $(BENCHMARKS); do echo "== benchmarks/$$b.py"; $(PY) benchmarks/$$b.py || exit 1; done

clean:
	rm -rf runs .pytest_cache reports/demo
