# Two commands do all set-up on a fresh machine:
#   make demo   install, then train and evaluate on the bundled spoken-digits corpus
#   make test   install, then run the test suite
.PHONY: install demo test lint clean mini_librispeech

install:
	bash tools/install.sh dev,lm,serve

demo: install
	bash recipes/digits/run.sh

mini_librispeech: install
	bash recipes/mini_librispeech/run.sh

test: install
	.venv/bin/ruff check asr tests tools recipes
	.venv/bin/python -m pytest -q -x --durations=15

lint: install
	.venv/bin/ruff check asr tests tools recipes

clean:
	rm -rf exp .pytest_cache .ruff_cache
