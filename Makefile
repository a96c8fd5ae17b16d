# The two commands a user needs:
#   make demo   set up .venv, make the built-in sample dataset, train, evaluate and draw
#   make test   set up .venv and run the test suite
# Both create .venv on first use; later runs reuse it until the requirement files change.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# make demo settings: small, from-scratch model that trains in a few minutes on 2 CPU cores.
DEMO_DATA ?= sample
DEMO_OUT  ?= runs/demo

.PHONY: all demo test venv clean

all: demo

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt -c constraints.txt
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

# A ResNet-18 FPN with a light keypoint head, from scratch (no pretrained weights needed),
# at 192 px: about 260 SGD steps, a few minutes on 2 CPU cores. It finds the sample people;
# real skeletons need the COCO recipe (see README, Training).
# --exist-ok: `make demo` again replaces the previous demo run in $(DEMO_OUT) (train.py refuses by default).
DEMO_TRAIN = --data-root $(DEMO_DATA) --output-dir $(DEMO_OUT) --exist-ok --device cpu --backbone resnet18 \
	--weights none --min-size 192 --max-size 288 --keypoint-head 128x4 --box-batch-size-per-image 32 \
	-b 2 --lr 0.01 --epochs 4 --milestones 3 --warmup-iters 50 --eval-every 4 --val-limit 16 -j 2

demo: $(STAMP)
	@test -f $(DEMO_DATA)/annotations/person_keypoints_val2017.json || $(PY) dataset.py --sample $(DEMO_DATA) --images 120
	$(PY) train.py $(DEMO_TRAIN)
	$(PY) test.py --data-root $(DEMO_DATA) --weights $(DEMO_OUT)/last.pth --device cpu \
		--save-results $(DEMO_OUT)/results.json --save-metrics $(DEMO_OUT)/metrics.json
	$(PY) detect.py --file "$(DEMO_DATA)/val2017/00000000020*.jpg" --weights $(DEMO_OUT)/last.pth \
		--device cpu --score-thresh 0.5 --kp-thresh=-inf --output $(DEMO_OUT)/detect --save-json --no-show
	@echo
	@echo "demo done:"
	@echo "  weights      $$(ls $(DEMO_OUT)/e*_b*_lr*_m*.pth) (plain state_dict), $(DEMO_OUT)/last.pth (full checkpoint)"
	@echo "  plot         $$(ls $(DEMO_OUT)/e*_b*_lr*_m*.png)"
	@echo "  metrics      $(DEMO_OUT)/metrics.json"
	@echo "  drawn images $(DEMO_OUT)/detect/"

clean:
	rm -rf $(DEMO_OUT) $(DEMO_DATA) .pytest_cache
