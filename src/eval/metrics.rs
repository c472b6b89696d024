//! Caption metrics: BLEU-4, ROUGE-L and CIDEr-D, a port of the toolkit's `reference/metrics.py` (which computes them as
//! the COCO caption evaluation, pycocoevalcap, does) over the same tokenisation.
//!
//! The port is literal so that the numbers agree with Python's to the last bits: the same formulas and constants,
//! n-grams kept in Python's dict order (first occurrence; all unigrams, then bigrams, ...) and every float sum
//! done in the same order as the Python code, left to right. `tests/data/metric-goldens.json`, written by
//! `scripts/toolkit metric-goldens`, holds the two together.
//!
//! Nothing else in the crate depends on this module; `capdec eval` uses it to score captions.

use std::collections::{HashMap, HashSet};

use anyhow::{Result, bail};

/// Longest n-gram.
const MAX_N: usize = 4;
/// BLEU's smoothing of empty counts (pycocoevalcap's values).
const TINY: f64 = 1e-15;
const SMALL: f64 = 1e-9;
/// ROUGE-L's recall weight.
const ROUGE_BETA: f64 = 1.2;
/// CIDEr-D's length penalty, a Gaussian of this width over the difference in caption lengths.
const CIDER_SIGMA: f64 = 6.0;

/// Corpus-level scores, as fractions (the docs show them x100).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaptionScores {
    pub bleu4: f64,
    pub rouge_l: f64,
    pub cider_d: f64,
    /// How many captions were scored.
    pub captions: usize,
}

/// The metrics' tokenisation: lower-case; every character that is neither alphanumeric nor white space becomes
/// a space; split on white space.
///
/// Python's `str.isalnum` and Rust's `char::is_alphanumeric` agree on letters and digits of every script, but not
/// on ~1,300 combining marks (Indic and Thai vowel signs and the like, alphabetic to Rust, not to Python) and
/// ~130 symbols such as circled letters: on such text the two tokenisations, and so the scores, can differ.
pub(crate) fn tokenize(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_string)
        .collect()
}

/// Scores captions against their references: `references[i]` are the reference captions of `hypotheses[i]`.
///
/// Errors (never panics) when the counts differ, the corpus is empty, a caption has no references, or a
/// reference has no words once tokenised (the Python code cannot score those either).
pub fn score_captions<H: AsRef<str>, R: AsRef<str>>(
    hypotheses: &[H],
    references: &[Vec<R>],
) -> Result<CaptionScores> {
    if hypotheses.len() != references.len() || hypotheses.is_empty() {
        bail!(
            "{} captions for {} reference sets",
            hypotheses.len(),
            references.len()
        );
    }
    let hyps: Vec<Vec<String>> = hypotheses.iter().map(|h| tokenize(h.as_ref())).collect();
    let mut refs: Vec<Vec<Vec<String>>> = Vec::with_capacity(references.len());
    for (index, texts) in references.iter().enumerate() {
        if texts.is_empty() {
            bail!("caption {} has no references", index + 1);
        }
        let mut set = Vec::with_capacity(texts.len());
        for (number, text) in texts.iter().enumerate() {
            let words = tokenize(text.as_ref());
            if words.is_empty() {
                bail!(
                    "reference {} of caption {} has no words: `{}`",
                    number + 1,
                    index + 1,
                    text.as_ref()
                );
            }
            set.push(words);
        }
        refs.push(set);
    }
    Ok(CaptionScores {
        bleu4: bleu4(&hyps, &refs),
        rouge_l: rouge_l(&hyps, &refs),
        cider_d: cider_d(&hyps, &refs),
        captions: hyps.len(),
    })
}

type Ngram<'a> = &'a [String];

/// n-gram counts in Python's `Counter` order: keys in order of first insertion.
struct Counts<'a> {
    order: Vec<(Ngram<'a>, usize)>,
    index: HashMap<Ngram<'a>, usize>,
}

impl<'a> Counts<'a> {
    /// Every 1- to 4-gram of `words`: `_all_ngrams`, unigrams first, each n in order of position.
    fn all_ngrams(words: &'a [String]) -> Self {
        let mut counts = Counts {
            order: Vec::new(),
            index: HashMap::new(),
        };
        for n in 1..=MAX_N {
            for ngram in words.windows(n) {
                match counts.index.get(ngram) {
                    Some(&at) => counts.order[at].1 += 1,
                    None => {
                        counts.index.insert(ngram, counts.order.len());
                        counts.order.push((ngram, 1));
                    }
                }
            }
        }
        counts
    }
}

/// Corpus BLEU-4: clipped n-gram matches summed over the corpus; brevity against, per caption, the reference
/// length closest to the caption's (the shorter on ties).
fn bleu4(hypotheses: &[Vec<String>], references: &[Vec<Vec<String>>]) -> f64 {
    let (mut correct, mut guessed) = ([0usize; MAX_N], [0usize; MAX_N]);
    let (mut hypothesis_length, mut reference_length) = (0usize, 0usize);
    for (hypothesis, refs) in hypotheses.iter().zip(references) {
        let mut most: HashMap<Ngram<'_>, usize> = HashMap::new();
        for reference in refs {
            for &(ngram, count) in &Counts::all_ngrams(reference).order {
                let best = most.entry(ngram).or_insert(0);
                *best = (*best).max(count);
            }
        }
        for &(ngram, count) in &Counts::all_ngrams(hypothesis).order {
            correct[ngram.len() - 1] += count.min(most.get(ngram).copied().unwrap_or(0));
        }
        for n in 1..=MAX_N {
            guessed[n - 1] += (hypothesis.len() + 1).saturating_sub(n);
        }
        hypothesis_length += hypothesis.len();
        reference_length += refs
            .iter()
            .map(|r| (r.len().abs_diff(hypothesis.len()), r.len()))
            .min()
            .map_or(0, |(_, length)| length);
    }
    let mut precision = 1.0;
    for (&right, &total) in correct.iter().zip(&guessed) {
        precision *= (right as f64 + TINY) / (total as f64 + SMALL);
    }
    let score = precision.powf(1.0 / MAX_N as f64);
    let ratio = (hypothesis_length as f64 + TINY) / (reference_length as f64 + SMALL);
    if ratio < 1.0 {
        score * (1.0 - 1.0 / ratio).exp()
    } else {
        score
    }
}

/// Length of the longest common subsequence, by the same dynamic programme as Python's `_lcs`.
fn lcs(a: &[String], b: &[String]) -> usize {
    let mut previous = vec![0usize; b.len() + 1];
    let mut current = Vec::with_capacity(b.len() + 1);
    for word in a {
        current.clear();
        current.push(0);
        for (j, other) in b.iter().enumerate() {
            let next = if word == other {
                previous[j] + 1
            } else {
                previous[j + 1].max(current[j])
            };
            current.push(next);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}

/// Python's `max` over floats: the first of equal values, the later only when strictly greater.
fn max_of(values: impl Iterator<Item = f64>) -> f64 {
    values
        .reduce(|best, value| if value > best { value } else { best })
        .unwrap_or(0.0)
}

/// Python's `sum` over floats in Python 3.11 (the toolkit's): left to right from zero. (Python 3.12 sums floats
/// with Neumaier's compensation instead; that moves the scores in their last bits only.)
fn python_sum(values: impl Iterator<Item = f64>) -> f64 {
    values.fold(0.0, |total, value| total + value)
}

/// Mean over captions of the F-measure (beta 1.2) of the best LCS precision and the best LCS recall over the
/// references (each maximised separately).
fn rouge_l(hypotheses: &[Vec<String>], references: &[Vec<Vec<String>>]) -> f64 {
    let beta2 = ROUGE_BETA * ROUGE_BETA;
    let mut scores = Vec::with_capacity(hypotheses.len());
    for (hypothesis, refs) in hypotheses.iter().zip(references) {
        let common: Vec<usize> = refs.iter().map(|r| lcs(r, hypothesis)).collect();
        let precision = if hypothesis.is_empty() {
            0.0
        } else {
            max_of(common.iter().map(|&c| c as f64 / hypothesis.len() as f64))
        };
        let recall = max_of(
            common
                .iter()
                .zip(refs)
                .map(|(&c, r)| c as f64 / r.len() as f64),
        );
        if precision != 0.0 && recall != 0.0 {
            scores.push((1.0 + beta2) * precision * recall / (recall + beta2 * precision));
        } else {
            scores.push(0.0);
        }
    }
    python_sum(scores.iter().copied()) / scores.len() as f64
}

/// A caption's tf-idf vector: weights in n-gram order, the norm of each n, and its length in bigrams.
struct Vector<'a> {
    weights: Vec<(Ngram<'a>, f64)>,
    index: HashMap<Ngram<'a>, f64>,
    norms: [f64; MAX_N],
    length: usize,
}

impl<'a> Vector<'a> {
    fn new(
        words: &'a [String],
        document_frequency: &HashMap<Ngram<'_>, usize>,
        log_corpus: f64,
    ) -> Self {
        let counts = Counts::all_ngrams(words);
        let weights: Vec<(Ngram<'a>, f64)> = counts
            .order
            .iter()
            .map(|&(ngram, count)| {
                let frequency = document_frequency.get(ngram).copied().unwrap_or(0) as f64;
                (ngram, count as f64 * (log_corpus - frequency.max(1.0).ln()))
            })
            .collect();
        let mut norms = [0.0; MAX_N];
        for &(ngram, weight) in &weights {
            norms[ngram.len() - 1] += weight * weight;
        }
        Vector {
            index: weights.iter().copied().collect(),
            weights,
            norms: norms.map(f64::sqrt),
            // pycocoevalcap measures a caption's length in bigrams; kept, so that the numbers match the
            // literature's.
            length: words.len().saturating_sub(1),
        }
    }
}

/// CIDEr-D: tf-idf n-gram vectors (idf from the references of this corpus), hypothesis weights clipped by the
/// reference's, a Gaussian penalty on the length difference, averaged over n = 1..4 and references, times 10.
fn cider_d(hypotheses: &[Vec<String>], references: &[Vec<Vec<String>>]) -> f64 {
    let mut document_frequency: HashMap<Ngram<'_>, usize> = HashMap::new();
    for refs in references {
        let mut seen: HashSet<Ngram<'_>> = HashSet::new();
        for reference in refs {
            seen.extend(
                Counts::all_ngrams(reference)
                    .order
                    .iter()
                    .map(|&(ngram, _)| ngram),
            );
        }
        for ngram in seen {
            *document_frequency.entry(ngram).or_insert(0) += 1;
        }
    }
    let log_corpus = (references.len() as f64).ln();

    let denominator = 2.0 * CIDER_SIGMA * CIDER_SIGMA;
    let mut scores = Vec::with_capacity(hypotheses.len());
    for (hypothesis, refs) in hypotheses.iter().zip(references) {
        let hyp = Vector::new(hypothesis, &document_frequency, log_corpus);
        let mut total = 0.0;
        for reference in refs {
            let other = Vector::new(reference, &document_frequency, log_corpus);
            let difference = hyp.length.abs_diff(other.length) as f64;
            let penalty = (-(difference * difference) / denominator).exp();
            for n in 0..MAX_N {
                let mut value = python_sum(
                    hyp.weights
                        .iter()
                        .filter(|(ngram, _)| ngram.len() == n + 1)
                        .map(|&(ngram, weight)| {
                            let theirs = other.index.get(ngram).copied().unwrap_or(0.0);
                            python_min(weight, theirs) * theirs
                        }),
                );
                if hyp.norms[n] != 0.0 && other.norms[n] != 0.0 {
                    value /= hyp.norms[n] * other.norms[n];
                }
                total += value * penalty;
            }
        }
        scores.push(10.0 * total / MAX_N as f64 / refs.len() as f64);
    }
    python_sum(scores.iter().copied()) / scores.len() as f64
}

/// Python's `min(a, b)`: `a` unless `b` is strictly smaller.
fn python_min(a: f64, b: f64) -> f64 {
    if b < a { b } else { a }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<String> {
        list.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn tokenisation_lowercases_and_drops_punctuation() {
        assert_eq!(
            tokenize("A big red Circle, a small star."),
            words(&["a", "big", "red", "circle", "a", "small", "star"])
        );
        assert_eq!(tokenize("  two\tstars...  "), words(&["two", "stars"]));
        assert_eq!(
            tokenize("it's 2 x-rays"),
            words(&["it", "s", "2", "x", "rays"])
        );
        assert_eq!(
            tokenize("Café—ÉGLISE «ΟΔΟΣ» 日本"),
            words(&["café", "église", "οδος", "日本"])
        );
        assert_eq!(tokenize("?!"), Vec::<String>::new());
    }

    #[test]
    fn ngrams_keep_first_insertion_order() {
        let text = words(&["a", "b", "a", "b"]);
        let counts = Counts::all_ngrams(&text);
        let listed: Vec<(String, usize)> = counts
            .order
            .iter()
            .map(|(ngram, count)| (ngram.join(" "), *count))
            .collect();
        let expected = [
            ("a", 2),
            ("b", 2),
            ("a b", 2),
            ("b a", 1),
            ("a b a", 1),
            ("b a b", 1),
            ("a b a b", 1),
        ];
        assert_eq!(
            listed,
            expected
                .iter()
                .map(|(n, c)| (n.to_string(), *c))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn lcs_counts_common_subsequence() {
        assert_eq!(
            lcs(&words(&["a", "b", "c", "d"]), &words(&["b", "d", "a"])),
            2
        );
        assert_eq!(lcs(&[], &words(&["a"])), 0);
    }

    #[test]
    fn a_perfect_caption_scores_full_bleu_and_rouge() {
        let refs = vec![vec!["a big red circle on a grey background."]];
        let scores = score_captions(&["A big red circle on a grey background"], &refs).unwrap();
        assert!((scores.bleu4 - 1.0).abs() < 1e-9, "{scores:?}");
        assert!((scores.rouge_l - 1.0).abs() < 1e-12, "{scores:?}");
        // One caption: every n-gram is in every caption's references, so idf, and CIDEr-D, are zero.
        assert_eq!(scores.cider_d, 0.0);
        assert_eq!(scores.captions, 1);
    }

    #[test]
    fn a_right_caption_beats_a_wrong_one() {
        let refs = vec![
            vec!["a red circle.", "a big red circle on a grey background."],
            vec!["two blue stars.", "a pair of blue stars"],
            vec!["a small green square", "one green square on white"],
        ];
        let right = score_captions(
            &["a red circle", "two blue stars", "a small green square"],
            &refs,
        )
        .unwrap();
        let wrong = score_captions(
            &["two blue stars", "a small green square", "a red circle"],
            &refs,
        )
        .unwrap();
        assert!(right.bleu4 > wrong.bleu4 && right.rouge_l > wrong.rouge_l);
        assert!(right.cider_d > wrong.cider_d, "{right:?} {wrong:?}");
    }

    #[test]
    fn bad_corpora_are_errors() {
        let none: &[&str] = &[];
        let no_refs: &[Vec<&str>] = &[];
        let error = |result: Result<CaptionScores>| result.unwrap_err().to_string();
        assert_eq!(
            error(score_captions(none, no_refs)),
            "0 captions for 0 reference sets"
        );
        assert_eq!(
            error(score_captions(&["a", "b"], &[vec!["a"]])),
            "2 captions for 1 reference sets"
        );
        assert_eq!(
            error(score_captions(&["a", "b"], &[vec!["a"], vec![]])),
            "caption 2 has no references"
        );
        assert_eq!(
            error(score_captions(&["a"], &[vec!["a", "..."]])),
            "reference 2 of caption 1 has no words: `...`"
        );
    }
}
