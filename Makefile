# The two commands of the README's quickstart, and a few helpers.
.PHONY: setup deploy test bench clean

setup:
	./scripts/setup.sh

# The main job: deploy the bundled Fashion-MNIST supernet to the default board.
deploy: setup
	.venv/bin/moofa-deploy --target nucleo-f746zg --out build/deploy --boot always

test: setup
	.venv/bin/python -m pytest -q

bench: setup
	.venv/bin/python bench/bench_planner.py
	.venv/bin/python bench/bench_verify.py

clean:
	rm -rf build .cache .pytest_cache
