"""coco_analyze: the keypoint error breakdown (Ronchi & Perona) on real coco-mini ground truth
with errors injected in known numbers, and test.py --analyze end to end.

The detections are coco-mini's ground truth, perfect (test_eval.ground_truth_as_results), then
some persons get one kind of error each: a left/right pair swapped (inversion), a joint put on the
same joint of another person (swap), every joint moved to keypoint similarity 0.7 (jitter), a
joint thrown far away (miss). Each is placed where it can be only that kind (the joints apart by
more than ks 0.2), so the analysis must report exactly these numbers.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from conftest import flag_error, one_line_error
from test_eval import ground_truth_as_results, script  # noqa: F401  (script: test.py, a fixture)

import coco_analyze
import coco_eval
from dataset import load_coco
from keypoints import COCO13, COCO17, KeypointSet

VAL_ANN = Path("annotations") / "person_keypoints_val2017.json"
JITTER_AT = 0.7   # the similarity every joint of a jittered person is moved to
APART = 0.2       # joints chosen for inversions and swaps are below this similarity to the wrong place


def similarity(a, b, area: float, sigma: float) -> float:
    """COCOeval's per-joint term: exp(-d^2 / (2 area (2 sigma)^2))."""
    return math.exp(-float(np.sum((np.asarray(a) - np.asarray(b)) ** 2)) / (2 * area * (2 * sigma) ** 2))


@dataclass
class Injected:
    results: list[dict]
    expected: Counter = field(default_factory=Counter)                        # joints of each kind
    per_keypoint: dict[str, Counter] = field(default_factory=dict)            # the same, per keypoint name
    labelled: Counter = field(default_factory=Counter)                        # labelled joints per keypoint name


def inject(ann_file: Path, plan: dict[str, int], keypoint_set: KeypointSet = COCO17) -> Injected:
    """The perfect detections of `ann_file`, with plan[kind] persons given one error of that kind
    each (largest persons with 8 or more labelled joints first, one kind per person)."""
    data = json.loads(ann_file.read_text())
    sigmas = dict(zip(keypoint_set.names, coco_eval.oks_sigmas(keypoint_set, verbose=False)[0]))
    sigma = [sigmas[n] for n in keypoint_set.names]
    results = ground_truth_as_results(ann_file)
    index = {a["id"]: i for i, a in enumerate(a for a in data["annotations"] if not a.get("iscrowd"))}
    persons = [a for a in data["annotations"] if not a.get("iscrowd") and a["num_keypoints"] > 0]
    out = Injected(results)
    for a in persons:
        out.labelled.update(n for n, v in zip(keypoint_set.names, a["keypoints"][2::3]) if v > 0)
    remaining = dict(plan)
    for person in sorted((a for a in persons if a["num_keypoints"] >= 8), key=lambda a: -a["area"]):
        others = [a for a in persons if a["image_id"] == person["image_id"] and a["id"] != person["id"]]
        for kind in [k for k, n in remaining.items() if n > 0]:
            kps = np.array(results[index[person["id"]]]["keypoints"], float).reshape(-1, 3)
            kps[:, 2] = person["keypoints"][2::3]  # which joints are labelled
            changed = INJECTIONS[kind](kps, person["area"], sigma, keypoint_set, others)
            if changed is not None:
                kps, joints = changed
                results[index[person["id"]]]["keypoints"] = kps.reshape(-1).tolist()
                out.expected[kind] += len(joints)
                for j in joints:
                    out.per_keypoint.setdefault(keypoint_set.names[j], Counter())[kind] += 1
                remaining[kind] -= 1
                break
    assert not any(remaining.values()), f"coco-mini has too few persons for {plan}: {remaining} left"
    out.expected["good"] = sum(out.labelled.values()) - sum(out.expected.values())
    return out


def invert(kps, area, sigma, keypoint_set, others):
    """Swap the first left/right pair that lies apart (both joints labelled)."""
    for i, j in enumerate(keypoint_set.flip_index):
        if i < j and kps[i, 2] and kps[j, 2] and similarity(kps[i, :2], kps[j, :2], area, sigma[i]) < APART:
            kps = kps.copy()
            kps[[i, j], :2] = kps[[j, i], :2]
            return kps, [i, j]
    return None


def swap(kps, area, sigma, keypoint_set, others):
    """Put one joint on the same joint of another person of the image, far from its own and its counterpart."""
    for other in others:
        theirs = np.array(other["keypoints"], float).reshape(-1, 3)
        for i, j in enumerate(keypoint_set.flip_index):
            if kps[i, 2] and theirs[i, 2] and all(
                    not kps[k, 2] or similarity(theirs[i, :2], kps[k, :2], area, sigma[i]) < APART for k in {i, j}):
                kps = kps.copy()
                kps[i, :2] = theirs[i, :2]
                return kps, [i]
    return None


def jitter(kps, area, sigma, keypoint_set, others):
    """Every labelled joint moved right to similarity JITTER_AT of itself."""
    labelled = np.flatnonzero(kps[:, 2] > 0)
    kps = kps.copy()
    kps[labelled, 0] += np.sqrt(-math.log(JITTER_AT) * 2 * area * (2 * np.array(sigma)[labelled]) ** 2)
    return kps, list(labelled)


def miss(kps, area, sigma, keypoint_set, others):
    """The first labelled joint thrown far from every person."""
    i = int(np.flatnonzero(kps[:, 2] > 0)[0])
    kps = kps.copy()
    kps[i, :2] += 5000
    return kps, [i]


INJECTIONS = {"inversion": invert, "swap": swap, "jitter": jitter, "miss": miss}


def analysed(ann_file: Path, results: list[dict]) -> dict:
    return coco_eval.coco_evaluate(load_coco(ann_file), results, verbose=False, analyze=True)


def reported_counts(metrics: dict) -> dict[str, float]:
    total = metrics["keypoint_analysis"]["keypoints"]
    return {kind: share * total for kind, share in metrics["keypoint_errors"].items()}


# --------------------------------------------------------------------------------------
# The breakdown
# --------------------------------------------------------------------------------------
def test_each_joint_by_its_similarity_and_where_its_fix_puts_it():
    """Two made-up persons: joints placed at chosen similarities, to their own joint, to the
    counterpart, to the other person's; the fix moves each to the similarity the paper gives it."""
    sigmas = np.array(coco_eval.oks_sigmas(COCO17)[0])
    area = 100.0 ** 2
    xy = np.stack([np.column_stack([np.arange(17) * 40.0, np.zeros(17)]),
                   np.column_stack([np.arange(17) * 40.0, np.full(17, 500.0)])])
    labelled = np.ones((2, 17), dtype=bool)
    labelled[0, 16] = False
    points = xy[0].copy()

    def at(j: int, ks: float, start) -> np.ndarray:  # `ks` from `start` to the right
        return np.asarray(start) + [coco_analyze.distance_at(np.array([ks]), area, sigmas[j:j + 1])[0], 0.0]

    points[1] = at(1, 0.86, xy[0, 1])           # left_eye: good
    points[2] = at(2, 0.84, xy[0, 2])           # right_eye: jitter
    points[3] = at(3, 0.51, xy[0, 3])           # left_ear: jitter
    points[5] = at(5, 0.6, xy[0, 6])            # left_shoulder at 0.6 of the right shoulder: inversion
    points[7] = at(7, 0.9, xy[1, 7])            # left_elbow on the other person's: swap
    points[9] = at(9, 0.7, xy[1, 10])           # left_wrist near the other's right wrist: swap
    points[11] = xy[0, 11] + [0.0, 250.0]       # left_hip half way to the other person: miss
    points[13] = xy[0, 13] + [9000.0, 0.0]      # left_knee far away: miss
    kinds, fixed = coco_analyze.classify(points, 0, xy, labelled, np.array([area, area]), sigmas, COCO17.flip_index)
    named = {COCO17.names[j]: coco_analyze.KINDS[k] if k >= 0 else None for j, k in enumerate(kinds)}
    assert named["left_eye"] == "good" and named["right_eye"] == named["left_ear"] == "jitter"
    assert named["left_shoulder"] == "inversion" and named["left_elbow"] == named["left_wrist"] == "swap"
    assert named["left_hip"] == named["left_knee"] == "miss" and named["right_ankle"] is None
    assert sum(v == "good" for v in named.values()) == 17 - 1 - 7
    own = [similarity(fixed[j], xy[0, j], area, sigmas[j]) for j in range(16)]
    expected = {1: 0.86, 2: coco_analyze.GOOD_KS, 3: coco_analyze.GOOD_KS, 5: 0.6, 7: 0.9, 9: 0.7,
                11: coco_analyze.JITTER_KS, 13: coco_analyze.JITTER_KS}
    assert {j: own[j] for j in expected} == pytest.approx(expected)
    assert np.array_equal(fixed[16], points[16])  # unlabelled: left where it is
    # inversion is tested before swap: on the counterpart and on the other person's joint at once
    xy[1, 6] = xy[0, 6]
    kinds, _ = coco_analyze.classify(points, 0, xy, labelled, np.array([area, area]), sigmas, COCO17.flip_index)
    assert coco_analyze.KINDS[kinds[5]] == "inversion"


def test_perfect_detections_are_all_good_with_ap_one(coco_mini):
    ann = coco_mini / VAL_ANN
    metrics = analysed(ann, ground_truth_as_results(ann))
    info = metrics["keypoint_analysis"]
    labelled = sum(a["num_keypoints"] for a in json.loads(ann.read_text())["annotations"] if not a["iscrowd"])
    assert info["keypoints"] == labelled > 600
    assert metrics["keypoint_errors"] == {"good": 1.0, "jitter": 0.0, "inversion": 0.0, "swap": 0.0, "miss": 0.0}
    assert metrics["keypoints"]["AP"] == info["ap"] == 1.0
    assert metrics["ap_if_fixed"] == dict.fromkeys(coco_analyze.FIXES, 1.0)
    assert info["persons_matched"] == info["persons"] and info["costliest"] is None
    assert info["background_false_positives"]["total"] == info["false_negatives"]["total"] == 0


def test_injected_errors_are_reported_in_their_numbers(coco_mini):
    ann = coco_mini / VAL_ANN
    injected = inject(ann, {"inversion": 6, "swap": 4, "jitter": 3, "miss": 8})
    metrics = analysed(ann, injected.results)
    assert metrics["keypoint_analysis"]["keypoints"] == sum(injected.labelled.values())
    assert injected.expected["inversion"] == 12 and injected.expected["miss"] == 8
    reported = reported_counts(metrics)
    for kind in coco_analyze.KINDS:
        assert reported[kind] == pytest.approx(injected.expected[kind], abs=0.5), kind
    assert sum(metrics["keypoint_errors"].values()) == pytest.approx(1.0)
    # per keypoint: the injected joints, and nothing else
    per_keypoint = metrics["keypoint_errors_per_keypoint"]
    assert list(per_keypoint) == list(COCO17.names)
    for name, shares in per_keypoint.items():
        for kind in coco_analyze.ERRORS:
            expected = injected.per_keypoint.get(name, Counter())[kind] / injected.labelled[name]
            assert shares[kind] == pytest.approx(expected, abs=1e-9), (name, kind)
    assert metrics["keypoint_analysis"]["ap"] == metrics["keypoints"]["AP"] < 1.0


@pytest.mark.parametrize("kind", coco_analyze.ERRORS)
def test_fixing_an_error_kind_gains_back_what_it_cost(coco_mini, kind):
    """One kind injected: fixing it raises the AP (to 1 where the joint was right on the wrong
    person's joint), fixing any other kind, or the background, changes nothing."""
    ann = coco_mini / VAL_ANN
    metrics = analysed(ann, inject(ann, {kind: 8}).results)
    ap, fixed = metrics["keypoints"]["AP"], metrics["ap_if_fixed"]
    assert ap < 1.0 and fixed[kind] > ap + 0.01
    if kind in ("inversion", "swap"):
        assert fixed[kind] == pytest.approx(1.0)
    for other in ("jitter", "inversion", "swap", "miss", "background"):
        if other != kind:
            assert fixed[other] == ap, other
    assert metrics["keypoint_analysis"]["costliest"] in (kind, "scoring")


def test_background_false_positives_and_their_fix(coco_mini):
    ann = coco_mini / VAL_ANN
    results = ground_truth_as_results(ann)
    far = [{**r, "bbox": [r["bbox"][0] + 9000, *r["bbox"][1:]], "score": 2.0,
            "keypoints": [v + 9000 if k % 3 == 0 else v for k, v in enumerate(r["keypoints"])]}
           for r in results[:10]]
    metrics = analysed(ann, far + results)
    fp = metrics["keypoint_analysis"]["background_false_positives"]
    assert fp["total"] == 10 and fp["duplicates"] == 0
    sizes = Counter("small" if r["bbox"][2] * r["bbox"][3] < 32 ** 2 else
                    "medium" if r["bbox"][2] * r["bbox"][3] < 96 ** 2 else "large" for r in far)
    assert fp["by_size"] == {s: sizes[s] for s in ("small", "medium", "large")}
    assert metrics["keypoints"]["AP"] < 1.0 and metrics["ap_if_fixed"]["background"] == 1.0
    assert metrics["keypoint_errors"]["good"] == 1.0
    assert metrics["keypoint_analysis"]["costliest"] in ("background", "scoring")


def test_rescoring_by_oks_puts_the_better_duplicate_first(coco_mini):
    """Each person found twice: a jittered copy scored above the perfect one. Rescored by their
    OKS, the perfect ones come first and the AP is 1."""
    ann = coco_mini / VAL_ANN
    injected = inject(ann, {"jitter": 12})
    perfect = ground_truth_as_results(ann)
    changed = [(r, p) for r, p in zip(injected.results, perfect) if r["keypoints"] != p["keypoints"]]
    assert len(changed) == 12
    results = [{**r, "score": 0.9} for r, _ in changed] + [{**p, "score": 0.5} for p in perfect]
    metrics = analysed(ann, results)
    assert metrics["keypoints"]["AP"] < 0.95
    assert metrics["ap_if_fixed"]["scoring"] == pytest.approx(1.0)
    # at OKS 0.1 the jittered copies take the persons: their twins are unmatched, on a person
    assert metrics["keypoint_analysis"]["background_false_positives"]["duplicates"] == 12


def test_false_negatives_by_size_and_labelled_joints(coco_mini):
    ann = coco_mini / VAL_ANN
    data = json.loads(ann.read_text())
    counted = [a for a in data["annotations"] if not a["iscrowd"] and a["num_keypoints"] > 0]
    dropped = counted[::5]
    results = [r for r, a in zip(ground_truth_as_results(ann), (a for a in data["annotations"] if not a["iscrowd"]))
               if a not in dropped]
    fn = analysed(ann, results)["keypoint_analysis"]["false_negatives"]
    assert fn["total"] == len(dropped)
    assert sum(fn["by_size"].values()) == sum(fn["by_labelled_keypoints"].values()) == len(dropped)
    assert list(fn["by_labelled_keypoints"]) == ["1-5", "6-10", "11-15", "16-17"]
    assert fn["by_labelled_keypoints"]["16-17"] == sum(a["num_keypoints"] >= 16 for a in dropped)
    assert fn["by_size"]["large"] == sum(a["area"] >= 96 ** 2 for a in dropped)


def test_another_keypoint_set_with_its_own_flip_pairs(coco_mini, tmp_path):
    """coco-mini cut to keypoints.COCO13 (no eyes, no ears): inversions and swaps by its own pairs."""
    data = json.loads((coco_mini / VAL_ANN).read_text())
    keep = [COCO17.names.index(n) for n in COCO13.names]
    for a in data["annotations"]:
        kps = np.array(a["keypoints"]).reshape(-1, 3)[keep]
        a["keypoints"], a["num_keypoints"] = kps.reshape(-1).tolist(), int((kps[:, 2] > 0).sum())
    data["categories"] = [COCO13.category()]
    ann = tmp_path / "coco13.json"
    ann.write_text(json.dumps(data))
    injected = inject(ann, {"inversion": 5, "swap": 3}, COCO13)
    metrics = analysed(ann, injected.results)
    assert list(metrics["keypoint_errors_per_keypoint"]) == list(COCO13.names)
    reported = reported_counts(metrics)
    assert reported["inversion"] == pytest.approx(10, abs=0.5) and reported["swap"] == pytest.approx(3, abs=0.5)
    assert metrics["keypoint_analysis"]["keypoints"] == sum(injected.labelled.values())


def test_no_detections_and_no_match():
    """Nothing analysed: fractions are None (not zeros that would read as 'never wrong')."""
    shares = coco_analyze.fractions(np.zeros(len(coco_analyze.KINDS)))
    assert shares == dict.fromkeys(coco_analyze.KINDS)
    assert "no ground-truth person matched" in coco_analyze.summary_line({"keypoint_errors": shares})
    assert coco_analyze.joint_count_bins([1, 5, 6, 17, 13], 17) == {"1-5": 2, "6-10": 1, "11-15": 1, "16-17": 1}
    assert coco_analyze.joint_count_bins([13, 1], 13) == {"1-4": 1, "5-8": 0, "9-12": 0, "13": 1}


def test_empty_results_every_person_is_a_false_negative(coco_mini):
    ann = coco_mini / VAL_ANN
    metrics = analysed(ann, [])
    info = metrics["keypoint_analysis"]
    assert info["false_negatives"]["total"] == info["persons"] > 0
    assert metrics["keypoint_errors"]["good"] is None and metrics["ap_if_fixed"]["background"] == 0.0


# --------------------------------------------------------------------------------------
# test.py --analyze
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def injected_file(coco_mini, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("analyze") / "results.json"
    path.write_text(json.dumps(inject(coco_mini / VAL_ANN, {"inversion": 4, "swap": 3, "jitter": 2, "miss": 3}).results))
    return path


def test_test_py_analyze_prints_saves_and_draws(script, coco_mini, injected_file, tmp_path, capsys):
    metrics_path = tmp_path / "m.json"
    metrics = script.main(["--data-root", str(coco_mini), "--results", str(injected_file), "--save-metrics",
                           str(metrics_path), "--analyze-examples", "3"])
    out = capsys.readouterr().out
    assert out.index("Evaluation for *keypoints*:") < out.index("Keypoint errors (Ronchi & Perona") \
        < out.index("Costliest error: ")
    assert f"matched to a detection at OKS >= {coco_analyze.MATCH_OKS}" in out
    saved = json.loads(metrics_path.read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert set(saved["keypoint_errors"]) == set(coco_analyze.KINDS)
    assert sum(saved["keypoint_errors"].values()) == pytest.approx(1.0)
    assert list(saved["ap_if_fixed"]) == ["jitter", "inversion", "swap", "miss", "scoring", "background"]
    assert set(saved["keypoint_errors_per_keypoint"]) == set(COCO17.names)
    assert (tmp_path / "m_analysis.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    examples = sorted((tmp_path / "m_examples").glob("*.jpg"))
    assert [p.name[:3] for p in examples] == ["01_", "02_", "03_"]
    assert f"3 example(s) to {tmp_path / 'm_examples'}" in out


def test_test_py_analyze_without_metrics_file_draws_in_runs_test(script, coco_mini, injected_file, tmp_path,
                                                                 monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    script.main(["--data-root", str(coco_mini), "--results", str(injected_file), "--save-metrics", "", "--analyze"])
    assert (tmp_path / "runs" / "test" / "metrics_analysis.png").is_file()
    assert not (tmp_path / "runs" / "test" / "metrics.json").exists()
    assert not (tmp_path / "runs" / "test" / "metrics_examples").exists()


def test_test_py_without_analyze_has_no_breakdown(script, coco_mini, injected_file, capsys):
    metrics = script.main(["--data-root", str(coco_mini), "--results", str(injected_file), "--save-metrics", ""])
    assert "keypoint_errors" not in metrics and "Keypoint errors" not in capsys.readouterr().out


def test_test_py_analyze_examples_need_the_images(script, coco_mini, injected_file, tmp_path, capsys):
    message = one_line_error(script.main, ["--ann-file", str(coco_mini / VAL_ANN), "--results", str(injected_file),
                                           "--save-metrics", "", "--analyze-examples", "2", "--data-root",
                                           str(tmp_path / "nowhere")])
    assert message == (f"error: --analyze-examples needs the images: {tmp_path / 'nowhere' / 'val2017'} is not a "
                       "folder (give --images or --data-root)")
    (tmp_path / "empty").mkdir()
    message = one_line_error(script.main, ["--ann-file", str(coco_mini / VAL_ANN), "--results", str(injected_file),
                                           "--save-metrics", str(tmp_path / "m.json"), "--analyze-examples", "2",
                                           "--images", str(tmp_path / "empty")])
    assert message.startswith(f"error: --analyze-examples needs the images: {tmp_path / 'empty'}/0") \
        and message.endswith(" not found (give --images or --data-root)")
    assert "error: argument --analyze-examples: " in flag_error(script.main, ["--analyze-examples", "0"], capsys)


def test_summary_line(coco_mini):
    """make demo's one line."""
    ann = coco_mini / VAL_ANN
    metrics = analysed(ann, inject(ann, {"inversion": 3}).results)
    line = coco_analyze.summary_line(metrics)
    assert line.startswith("keypoint errors: good ") and "inversion " in line and "costliest error: " in line
    assert "\n" not in line
