from __future__ import annotations

import random

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from capdec_toolkit.demo.scene_world import captions, sample_scenes
from capdec_toolkit.parity.metric_goldens import GOLDEN_CASES, GoldenCase
from capdec_toolkit.reference.metrics import score_captions, tokenize


def test_tokenisation_lowercases_and_drops_punctuation() -> None:
    assert tokenize("A big red Circle, a small star.") == ["a", "big", "red", "circle", "a", "small", "star"]
    assert tokenize("  two\tstars...  ") == ["two", "stars"]
    assert tokenize("it's 2 x-rays") == ["it", "s", "2", "x", "rays"]


def _coco_scores(hypotheses: list[str], references: list[list[str]]) -> tuple[float, float, float]:
    """pycocoevalcap's scorers over the same tokenisation (its PTB tokenizer needs Java)."""
    res = {index: [" ".join(tokenize(text))] for index, text in enumerate(hypotheses)}
    gts = {index: [" ".join(tokenize(text)) for text in refs] for index, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return bleu[3], float(rouge), float(cider)


def _corpus(seed: int) -> tuple[list[str], list[list[str]]]:
    """Grammar references, and hypotheses that range from a reference to another scene's caption or a fragment."""
    rng = random.Random(seed)
    scenes = sample_scenes(40, seed, held_out=True)
    references = [captions(scene) for scene in scenes]
    hypotheses = []
    for index, refs in enumerate(references):
        pick = rng.random()
        if pick < 0.3:
            hypotheses.append(refs[0])
        elif pick < 0.6:
            hypotheses.append(references[(index + 1) % len(references)][1])
        elif pick < 0.8:
            words = refs[2].split()
            hypotheses.append(" ".join(words[: rng.randint(1, len(words))]))
        else:
            hypotheses.append("a " + " ".join(rng.sample(refs[3].split(), 3)) + " things.")
    return hypotheses, references


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_metrics_match_pycocoevalcap(seed: int) -> None:
    hypotheses, references = _corpus(seed)
    ours = score_captions(hypotheses, references)
    bleu, rouge, cider = _coco_scores(hypotheses, references)
    assert ours.bleu4 == pytest.approx(bleu, rel=1e-9, abs=1e-12)
    assert ours.rouge_l == pytest.approx(rouge, rel=1e-9)
    assert ours.cider_d == pytest.approx(cider, rel=1e-9)
    assert ours.captions == 40


def test_metrics_of_edge_cases_match_pycocoevalcap() -> None:
    references = [["a red circle.", "a big red circle on a grey background."], ["two blue stars."]]
    for hypotheses in (["a red circle.", "two blue stars."], ["circle", "blue"], ["a", "two blue stars side by side"]):
        ours = score_captions(hypotheses, references)
        bleu, rouge, cider = _coco_scores(hypotheses, references)
        assert (ours.bleu4, ours.rouge_l, ours.cider_d) == pytest.approx((bleu, rouge, cider), rel=1e-9, abs=1e-12)


def test_a_perfect_caption_scores_higher_than_a_wrong_one() -> None:
    hypotheses, references = _corpus(4)
    perfect = score_captions([refs[0] for refs in references], references)
    wrong = score_captions([references[(i + 3) % len(references)][0] for i in range(len(references))], references)
    assert perfect.cider_d > wrong.cider_d and perfect.bleu4 > wrong.bleu4 and perfect.rouge_l > wrong.rouge_l


@pytest.mark.parametrize("case", GOLDEN_CASES, ids=lambda case: case.name)
def test_metric_golden_cases_match_pycocoevalcap(case: GoldenCase) -> None:
    ours = score_captions(case.hypotheses, case.references)
    bleu, rouge, cider = _coco_scores(case.hypotheses, case.references)
    assert (ours.bleu4, ours.rouge_l, ours.cider_d) == pytest.approx((bleu, rouge, cider), rel=1e-9, abs=1e-12)


def test_unscorable_corpora_are_value_errors() -> None:
    with pytest.raises(ValueError, match="0 captions for 0 reference sets"):
        score_captions([], [])
    with pytest.raises(ValueError, match="2 captions for 1 reference sets"):
        score_captions(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="caption 2 has no references"):
        score_captions(["a", "b"], [["a"], []])
    with pytest.raises(ValueError, match="reference 2 of caption 1 has no words"):
        score_captions(["a"], [["a", "..."]])
