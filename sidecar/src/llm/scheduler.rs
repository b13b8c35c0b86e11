//! Who runs in the next step. Waiting requests are admitted in turn across users (one user's
//! hundred queued requests never starve another's one) while the batch and KV budgets allow;
//! each step then decodes one token for every running sequence and spends what is left of its
//! token budget on prompt chunks, so a long prompt never stalls the others' decoding.

use std::collections::{HashMap, VecDeque};

use super::sequence::Sequence;

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Most sequences in one step.
    pub max_batch: usize,
    /// Most positions (prompt + `max_tokens`) the running sequences may reserve together.
    pub max_kv_tokens: usize,
    /// Most tokens one step computes; prompts are cut into chunks to fit.
    pub step_tokens: usize,
    /// Most requests waiting for a place; more are refused (429).
    pub max_waiting: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_batch: 16,
            max_kv_tokens: 32 * 1024,
            step_tokens: 256,
            max_waiting: 256,
        }
    }
}

pub struct Scheduler {
    cfg: SchedulerConfig,
    waiting: HashMap<String, VecDeque<Sequence>>,
    /// Users with waiting requests, in the order they get their next turn.
    turns: VecDeque<String>,
    pub running: Vec<Sequence>,
    reserved: usize,
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig) -> Scheduler {
        Scheduler {
            cfg,
            waiting: HashMap::new(),
            turns: VecDeque::new(),
            running: Vec::new(),
            reserved: 0,
        }
    }

    pub fn enqueue(&mut self, seq: Sequence) {
        let queue = self.waiting.entry(seq.user.clone()).or_default();
        if queue.is_empty() {
            self.turns.push_back(seq.user.clone());
        }
        queue.push_back(seq);
    }

    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.turns.is_empty()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.values().map(VecDeque::len).sum()
    }

    /// Forgets sequences whose callers went away, waiting or running; returns how many.
    pub fn drop_cancelled(&mut self) -> usize {
        let before = self.running.len() + self.waiting();
        self.running.retain(|s| !s.cancelled());
        self.reserved = self.running.iter().map(Sequence::reserved_tokens).sum();
        for q in self.waiting.values_mut() {
            q.retain(|s| !s.cancelled());
        }
        self.turns
            .retain(|u| self.waiting.get(u).is_some_and(|q| !q.is_empty()));
        self.waiting.retain(|_, q| !q.is_empty());
        before - self.running.len() - self.waiting()
    }

    /// Moves waiting sequences into the batch, one per user in turn, while there is room.
    pub fn admit(&mut self) {
        while self.running.len() < self.cfg.max_batch {
            let Some(user) = self.turns.pop_front() else { return };
            let queue = self.waiting.get_mut(&user).expect("a user with a turn has a queue");
            let need = queue.front().expect("queues in turn are not empty").reserved_tokens();
            if self.reserved + need > self.cfg.max_kv_tokens && !self.running.is_empty() {
                // Not enough KV room until something finishes; the user keeps their place.
                self.turns.push_front(user);
                return;
            }
            let seq = queue.pop_front().expect("checked");
            if queue.is_empty() {
                self.waiting.remove(&user);
            } else {
                self.turns.push_back(user);
            }
            self.reserved += seq.reserved_tokens();
            self.running.push(seq);
        }
    }

    /// How many of its pending tokens each running sequence computes this step (0: none).
    pub fn plan(&self) -> Vec<usize> {
        let decoding = self.running.iter().filter(|s| s.decoding()).count();
        let mut budget = self.cfg.step_tokens.saturating_sub(decoding);
        self.running
            .iter()
            .map(|s| {
                if s.decoding() {
                    return 1;
                }
                let n = s.pending().len().min(budget);
                budget -= n;
                n
            })
            .collect()
    }

    /// Removes the sequence at `i` from the batch, returning its KV reservation.
    pub fn retire(&mut self, i: usize) -> Sequence {
        let seq = self.running.swap_remove(i);
        self.reserved -= seq.reserved_tokens();
        seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::kv::SeqCache;
    use crate::llm::model::LlamaConfig;
    use maas_sidecar_client::llm::SamplingParams;

    fn cfg() -> LlamaConfig {
        LlamaConfig {
            vocab: 8,
            hidden: 4,
            layers: 1,
            heads: 1,
            kv_heads: 1,
            head_dim: 4,
            ffn: 4,
            rms_eps: 1e-5,
            rope_theta: 10_000.0,
            context: 1024,
        }
    }

    fn seq(
        user: &str,
        prompt: usize,
        max_tokens: u32,
    ) -> (
        Sequence,
        tokio::sync::mpsc::UnboundedReceiver<maas_sidecar_client::llm::GenerateEvent>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let params = SamplingParams {
            max_tokens,
            ..SamplingParams::default()
        };
        (
            Sequence::new(user.into(), vec![1; prompt], params, SeqCache::new(&cfg()), tx, None),
            rx,
        )
    }

    fn sched(max_batch: usize) -> Scheduler {
        Scheduler::new(SchedulerConfig {
            max_batch,
            max_kv_tokens: 10_000,
            step_tokens: 64,
            max_waiting: 100,
        })
    }

    #[test]
    fn one_users_hundred_requests_do_not_starve_anothers_one() {
        let mut s = sched(2);
        let mut keep = Vec::new();
        for _ in 0..100 {
            let (q, rx) = seq("greedy", 4, 4);
            s.enqueue(q);
            keep.push(rx);
        }
        let (q, rx) = seq("polite", 4, 4);
        s.enqueue(q);
        keep.push(rx);
        s.admit();
        let users: Vec<&str> = s.running.iter().map(|q| q.user.as_str()).collect();
        assert_eq!(users, ["greedy", "polite"]);
    }

    #[test]
    fn prompts_are_chunked_after_every_decoding_sequence_gets_its_token() {
        let mut s = sched(8);
        let (a, _ra) = seq("a", 200, 4);
        let (b, _rb) = seq("b", 3, 4);
        s.enqueue(a);
        s.enqueue(b);
        s.admit();
        assert_eq!(s.plan(), vec![64, 0], "the first prompt takes the whole budget");
        // Pretend b's prompt is in: it decodes one token a step, and a's chunk shrinks by one.
        s.running[1].cache.advance(3);
        assert_eq!(s.plan(), vec![63, 1]);
    }

    #[test]
    fn the_kv_budget_holds_requests_back_until_room_frees() {
        let mut s = Scheduler::new(SchedulerConfig {
            max_batch: 8,
            max_kv_tokens: 100,
            step_tokens: 64,
            max_waiting: 100,
        });
        let (a, _ra) = seq("a", 50, 30);
        let (b, _rb) = seq("b", 30, 30);
        s.enqueue(a);
        s.enqueue(b);
        s.admit();
        assert_eq!((s.running.len(), s.waiting()), (1, 1));
        s.retire(0);
        s.admit();
        assert_eq!((s.running.len(), s.waiting()), (1, 0));
    }

    #[test]
    fn a_caller_that_went_away_is_dropped_from_the_queue_and_the_batch() {
        let mut s = sched(1);
        let (a, ra) = seq("a", 4, 4);
        let (b, rb) = seq("b", 4, 4);
        s.enqueue(a);
        s.enqueue(b);
        s.admit();
        drop(ra);
        drop(rb);
        assert_eq!(s.drop_cancelled(), 2);
        assert!(s.is_idle());
    }
}
