//! Greedy and beam search exactly as docs/bundle-format.md ("Decoding") defines them, so the token ids can be
//! compared one for one with the Python reference. Pure: the model is anything that turns tokens into logits.
//! A token here is a decoder row (an index of the logits and of the token table): a GPT-2 id only where the
//! bundle keeps all of GPT-2's vocabulary; the captioner maps rows to ids.

use std::cmp::Ordering;

use anyhow::{Result, ensure};

mod softmax;

use softmax::log_sum_exp;

#[derive(Debug, Clone)]
pub struct SearchConfig {
    pub beam_size: usize,
    pub length_normalized: bool,
    pub max_tokens: usize,
    pub stop_rows: Vec<u32>,
    pub end_of_text_row: u32,
}

impl SearchConfig {
    /// Stop and end-of-text tokens both end a caption; only the text leaves end-of-text out.
    fn ends(&self, token: u32) -> bool {
        token == self.end_of_text_row || self.stop_rows.contains(&token)
    }
}

/// What the search needs from a decoder that keeps one cache row per live sequence.
pub(crate) trait Step {
    /// Row `i` of the new batch continues row `sources[i]` of the previous call's batch with `tokens[i]`;
    /// returns the next-token logits, one row per new row.
    fn step(&mut self, sources: &[usize], tokens: &[u32]) -> Result<Vec<Vec<f32>>>;
}

/// A finished search: the chosen tokens, a final stop or end-of-text token included, and their score.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    pub tokens: Vec<u32>,
    /// Sum of the tokens' log-probabilities.
    pub score: f64,
}

impl Hypothesis {
    pub fn mean_log_prob(&self) -> f64 {
        self.score / self.tokens.len().max(1) as f64
    }
}

/// Runs greedy search when `beam_size` is 1, beam search otherwise. `first` holds the logits after the prefix.
pub(crate) fn search(
    first: &[f32],
    model: &mut dyn Step,
    config: &SearchConfig,
) -> Result<Hypothesis> {
    ensure!(config.beam_size >= 1, "beam size must be at least 1");
    ensure!(config.max_tokens >= 1, "max tokens must be at least 1");
    ensure!(!first.is_empty(), "the decoder returned no logits");
    if config.beam_size == 1 {
        greedy(first, model, config)
    } else {
        beam(first, model, config)
    }
}

fn greedy(first: &[f32], model: &mut dyn Step, config: &SearchConfig) -> Result<Hypothesis> {
    let mut hyp = Hypothesis {
        tokens: Vec::new(),
        score: 0.0,
    };
    let mut logits = first.to_vec();
    loop {
        let token = argmax(&logits);
        hyp.score += f64::from(logits[token as usize]) - log_sum_exp(&logits);
        hyp.tokens.push(token);
        if config.ends(token) || hyp.tokens.len() >= config.max_tokens {
            break;
        }
        logits = single_row(model.step(&[0], &[token])?)?;
    }
    Ok(hyp)
}

/// Highest logit, lowest id on ties; NaN never wins.
fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] || (logits[best].is_nan() && !x.is_nan()) {
            best = i;
        }
    }
    best as u32
}

fn single_row(mut rows: Vec<Vec<f32>>) -> Result<Vec<f32>> {
    ensure!(
        rows.len() == 1,
        "the decoder returned {} rows of logits for one sequence",
        rows.len()
    );
    Ok(rows.swap_remove(0))
}

#[derive(Debug, Clone)]
struct Beam {
    tokens: Vec<u32>,
    score: f64,
    finished: bool,
    /// The row of the previous call's batch that the last token continues.
    parent_row: usize,
}

#[derive(Debug)]
struct Candidate {
    key: f64,
    source: usize,
    /// `None`: a finished beam proposing itself unchanged.
    token: Option<u32>,
    score: f64,
}

fn beam(first: &[f32], model: &mut dyn Step, config: &SearchConfig) -> Result<Hypothesis> {
    let key = |score: f64, length: usize| {
        if config.length_normalized {
            score / length as f64
        } else {
            score
        }
    };
    let extend = |parent: Option<&Beam>, token: u32, score: f64, parent_row: usize| {
        let mut tokens = parent.map(|p| p.tokens.clone()).unwrap_or_default();
        tokens.push(token);
        Beam {
            tokens,
            score,
            finished: config.ends(token),
            parent_row,
        }
    };

    let log_sum = log_sum_exp(first);
    let mut beams: Vec<Beam> = best_tokens(first, config.beam_size)
        .into_iter()
        .map(|(token, logit)| extend(None, token, f64::from(logit) - log_sum, 0))
        .collect();
    let mut length = 1;
    while length < config.max_tokens {
        let live: Vec<&Beam> = beams.iter().filter(|b| !b.finished).collect();
        if live.is_empty() {
            break;
        }
        let sources: Vec<usize> = live.iter().map(|b| b.parent_row).collect();
        // A live beam always holds at least its first token.
        let tokens: Vec<u32> = live
            .iter()
            .map(|b| b.tokens.last().copied().unwrap_or_default())
            .collect();
        let logits = model.step(&sources, &tokens)?;
        ensure!(
            logits.len() == live.len(),
            "the decoder returned {} rows of logits for {} sequences",
            logits.len(),
            live.len()
        );

        let mut candidates = Vec::new();
        let mut rows = logits.iter();
        for (source, b) in beams.iter().enumerate() {
            if b.finished {
                candidates.push(Candidate {
                    key: key(b.score, b.tokens.len()),
                    source,
                    token: None,
                    score: b.score,
                });
                continue;
            }
            let row = rows.next().map_or(&[][..], Vec::as_slice);
            let log_sum = log_sum_exp(row);
            // Within one beam every candidate has the same length and source, and its key grows with its logit, so
            // only the B highest logits can survive.
            for (token, logit) in best_tokens(row, config.beam_size) {
                let score = b.score + (f64::from(logit) - log_sum);
                candidates.push(Candidate {
                    key: key(score, b.tokens.len() + 1),
                    source,
                    token: Some(token),
                    score,
                });
            }
        }
        candidates.sort_by(|a, b| {
            b.key
                .total_cmp(&a.key)
                .then(a.source.cmp(&b.source))
                .then(a.token.cmp(&b.token))
        });
        candidates.truncate(config.beam_size);

        // Rows of this call's batch, by beam: the live beams in order.
        let row_of = |source: usize| beams[..source].iter().filter(|b| !b.finished).count();
        beams = candidates
            .iter()
            .map(|c| match c.token {
                None => beams[c.source].clone(),
                Some(token) => extend(Some(&beams[c.source]), token, c.score, row_of(c.source)),
            })
            .collect();
        length += 1;
    }
    // Survivors are in ranking order, so the first is the caption.
    let best = beams.swap_remove(0);
    Ok(Hypothesis {
        tokens: best.tokens,
        score: best.score,
    })
}

/// The `n` (token, logit) pairs with the highest logits, lowest id first on ties, in ranking order. A bounded
/// insertion keeps it linear in the vocabulary.
fn best_tokens(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(n + 1);
    for (token, &logit) in logits.iter().enumerate() {
        // Ids arrive in increasing order, so an equal logit never displaces an earlier (lower) id.
        if best.len() == n
            && best
                .last()
                .is_some_and(|&(_, worst)| logit.total_cmp(&worst) != Ordering::Greater)
        {
            continue;
        }
        let at = best.partition_point(|&(_, other)| other.total_cmp(&logit) != Ordering::Less);
        best.insert(at, (token as u32, logit));
        best.truncate(n);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake decoder: the logits depend only on the sequence so far, from a table keyed by its last token.
    struct Table {
        rows: Vec<Vec<f32>>,
        batch: Vec<Vec<u32>>,
        calls: Vec<(Vec<usize>, Vec<u32>)>,
    }

    impl Table {
        fn new(rows: Vec<Vec<f32>>) -> Table {
            Table {
                rows,
                batch: vec![vec![]],
                calls: vec![],
            }
        }
    }

    impl Step for Table {
        fn step(&mut self, sources: &[usize], tokens: &[u32]) -> Result<Vec<Vec<f32>>> {
            self.calls.push((sources.to_vec(), tokens.to_vec()));
            self.batch = sources
                .iter()
                .zip(tokens)
                .map(|(&s, &t)| {
                    let mut seq = self.batch[s].clone();
                    seq.push(t);
                    seq
                })
                .collect();
            Ok(tokens
                .iter()
                .map(|&t| self.rows[t as usize].clone())
                .collect())
        }
    }

    fn config(beam_size: usize, max_tokens: usize) -> SearchConfig {
        SearchConfig {
            beam_size,
            length_normalized: true,
            max_tokens,
            stop_rows: vec![1],
            end_of_text_row: 0,
        }
    }

    // Token 0 = end of text, 1 = stop ("."), 2.. = words.
    fn lp(p: &[f64]) -> Vec<f32> {
        p.iter().map(|&p| p.ln() as f32).collect()
    }

    #[test]
    fn greedy_keeps_stop_token_and_breaks_ties_by_lowest_id() {
        let mut m = Table::new(vec![
            lp(&[0.1, 0.1, 0.4, 0.4]),   // after 0 (unused)
            lp(&[0.25; 4]),              // after 1 (unused)
            lp(&[0.1, 0.6, 0.15, 0.15]), // after 2: stop
            lp(&[0.1, 0.1, 0.4, 0.4]),
        ]);
        let first = lp(&[0.1, 0.1, 0.4, 0.4]); // tie between 2 and 3: 2 wins
        let h = search(&first, &mut m, &config(1, 10)).unwrap();
        assert_eq!(h.tokens, vec![2, 1]);
        assert!((h.score - (0.4f64.ln() + 0.6f64.ln())).abs() < 1e-6);
        assert_eq!(m.calls, vec![(vec![0], vec![2])]);
    }

    #[test]
    fn greedy_keeps_end_of_text_and_respects_max_tokens() {
        let mut m = Table::new(vec![
            vec![0.0; 4],
            vec![0.0; 4],
            lp(&[0.7, 0.1, 0.1, 0.1]),
            lp(&[0.1, 0.1, 0.1, 0.7]),
        ]);
        let h = search(&lp(&[0.1, 0.1, 0.7, 0.1]), &mut m, &config(1, 10)).unwrap();
        assert_eq!(h.tokens, vec![2, 0]);
        let h = search(&lp(&[0.1, 0.1, 0.1, 0.7]), &mut m, &config(1, 3)).unwrap();
        assert_eq!(h.tokens, vec![3, 3, 3]);
    }

    #[test]
    fn beam_prefers_better_normalised_sequence_over_greedy_choice() {
        // Greedy takes 2 (0.5) then is stuck with poor continuations; beam finds 3 then 4 then stop.
        let rows = vec![
            vec![0.0; 5],
            vec![0.0; 5],
            lp(&[0.3, 0.3, 0.1, 0.2, 0.1]),      // after 2
            lp(&[0.01, 0.01, 0.01, 0.01, 0.96]), // after 3
            lp(&[0.01, 0.96, 0.01, 0.01, 0.01]), // after 4
        ];
        let first = lp(&[0.05, 0.05, 0.5, 0.35, 0.05]);
        let greedy_h = search(&first, &mut Table::new(rows.clone()), &config(1, 10)).unwrap();
        assert_eq!(greedy_h.tokens, vec![2, 0]);
        let mut m = Table::new(rows);
        let h = search(&first, &mut m, &config(2, 10)).unwrap();
        assert_eq!(h.tokens, vec![3, 4, 1]);
        // First step: both beams continue row 0 of the prefix call.
        assert_eq!(m.calls[0], (vec![0, 0], vec![2, 3]));
        // Then only the live beam [3, 4] is fed, continuing row 1 of that call.
        assert_eq!(m.calls[1], (vec![1], vec![4]));
        assert_eq!(m.batch, vec![vec![3, 4]]);
    }

    #[test]
    fn beam_ranks_finished_beams_against_live_ones_and_stops_when_all_finished() {
        let rows = vec![
            vec![0.0; 4],
            vec![0.0; 4],
            lp(&[0.05, 0.05, 0.45, 0.45]), // after 2: keep talking, never finish well
            lp(&[0.05, 0.05, 0.45, 0.45]),
        ];
        // Stop (1) immediately has log(0.3); continuing pays log(0.45) per token, which averages in.
        let first = lp(&[0.05, 0.3, 0.35, 0.3]);
        let mut m = Table::new(rows);
        let h = search(&first, &mut m, &config(2, 6)).unwrap();
        // Live beams average about log(0.42) > log(0.3), so they push the finished beam [1] out.
        assert_eq!(h.tokens.len(), 6);
        assert!(!h.tokens.contains(&1));
        // With length normalisation off, shorter is better: the one-token stop wins.
        let mut cfg = config(2, 6);
        cfg.length_normalized = false;
        let h = search(&first, &mut Table::new(m.rows.clone()), &cfg).unwrap();
        assert_eq!(h.tokens, vec![1]);
    }

    #[test]
    fn beam_search_ties_go_to_lower_source_then_lower_token() {
        assert_eq!(
            best_tokens(&[-1.0, -0.5, -0.5, -2.0], 2),
            vec![(1, -0.5), (2, -0.5)]
        );
        assert_eq!(
            best_tokens(&[-1.0, -0.5, -0.5, -0.1], 3),
            vec![(3, -0.1), (1, -0.5), (2, -0.5)]
        );
        assert_eq!(
            best_tokens(&[f32::NEG_INFINITY; 3], 2),
            vec![(0, f32::NEG_INFINITY), (1, f32::NEG_INFINITY)]
        );
        // Two identical beams: the survivors come from the lower source.
        let rows = vec![
            vec![0.0; 4],
            vec![0.0; 4],
            lp(&[0.1, 0.1, 0.4, 0.4]),
            lp(&[0.1, 0.1, 0.4, 0.4]),
        ];
        let mut m = Table::new(rows);
        search(&lp(&[0.1, 0.1, 0.4, 0.4]), &mut m, &config(2, 3)).unwrap();
        assert_eq!(m.calls[1], (vec![0, 0], vec![2, 3]));
    }

    #[test]
    fn beam_with_one_token_budget_returns_best_first_token() {
        let mut m = Table::new(vec![]);
        let h = search(&lp(&[0.1, 0.2, 0.3, 0.4]), &mut m, &config(3, 1)).unwrap();
        assert_eq!(h.tokens, vec![3]);
        assert!(m.calls.is_empty());
    }
}
