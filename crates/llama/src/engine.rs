//! [`LlamaEngine`]: a GGUF model run in process by llama.cpp, many requests
//! at once through one decode loop (continuous batching).
//!
//! One thread owns the model and its context. Requests arrive on a queue
//! and take a free *slot* (a llama.cpp sequence id). Every step the loop
//! builds one batch: the next token of every decoding sequence, then as
//! much pending prompt as fits (prefill in chunks), decodes it once, and
//! samples one token for each sequence whose logits were computed.
//! Sequences join and leave between steps. A slot remembers the tokens in
//! its KV cache, so a new request whose prompt starts the same way (the
//! same system prompt, a continued conversation) reuses them: those are
//! reported as cached tokens.

use std::io::IsTerminal;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use cocoon_engine::model::ModelIdentity;
use cocoon_engine::tools::{ForcedCall, Parsed, ToolCallParser, ToolChoice, ToolFormat};
use cocoon_engine::{
    Engine, EngineError, EngineRequest, Event, FinishReason, Generation, GenerationSender, Prompt,
    ResponseFormat, TrySend, Usage,
};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::data::LlamaTokenData;
use llama_cpp_2::token::data_array::LlamaTokenDataArray;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use llama_cpp_2::token::LlamaToken;

use crate::text::{StopMatcher, StopOutcome, ThinkTracker, Utf8Buffer};

/// How to load and run a model.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    /// The GGUF file.
    pub model_path: PathBuf,
    /// The file's identity when already known (hash-checked by the caller);
    /// `None` hashes the file at load.
    pub identity: Option<ModelIdentity>,
    /// Context tokens per sequence (prompt + answer).
    pub n_ctx_per_seq: u32,
    /// Sequences decoded together (the batch width).
    pub max_sequences: u32,
    /// Most tokens in one decode call.
    pub n_batch: u32,
    /// CPU threads (default: all cores).
    pub threads: Option<i32>,
    /// Requests that may wait for a slot before new ones are refused.
    pub max_queued: usize,
    /// Show a progress bar while loading (only on a terminal).
    pub progress: bool,
}

impl LlamaConfig {
    /// Defaults for `model_path`: 2048 tokens per sequence, 8 sequences.
    pub fn new(model_path: impl Into<PathBuf>) -> Self {
        Self {
            model_path: model_path.into(),
            identity: None,
            n_ctx_per_seq: 2048,
            max_sequences: 8,
            n_batch: 512,
            threads: None,
            max_queued: 64,
            progress: true,
        }
    }

    /// Defaults for a model whose file was already hashed (no second hash).
    pub fn for_model(model: &cocoon_engine::model::LocalModel) -> Self {
        Self {
            identity: Some(model.identity.clone()),
            ..Self::new(&model.path)
        }
    }
}

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is missing or unreadable.
    #[error("{0}")]
    Model(#[from] cocoon_engine::model::ModelError),
    /// llama.cpp refused the file or the context.
    #[error("llama.cpp could not load {path}: {reason}")]
    Llama {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Facts about the loaded model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// `name@sha256`.
    pub identity: ModelIdentity,
    /// The GGUF architecture (`llama`, `qwen3`, ...).
    pub architecture: String,
    /// Context tokens per sequence.
    pub n_ctx_per_seq: u32,
    /// Sequences decoded together.
    pub max_sequences: u32,
}

struct Job {
    request: EngineRequest,
    tx: GenerationSender,
}

/// What the decode thread is asked to do.
enum Command {
    /// Run a request.
    Generate(Box<Job>),
    /// Run a function on the decode thread (see [`LlamaEngine::run_on_decode_thread`]).
    Call(Box<dyn FnOnce() + Send>),
}

/// The embedded engine (see the module docs).
pub struct LlamaEngine {
    jobs: mpsc::Sender<Command>,
    info: ModelInfo,
    in_flight: Arc<AtomicUsize>,
    capacity: usize,
}

impl std::fmt::Debug for LlamaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaEngine")
            .field("model", &self.info.identity.to_string())
            .finish()
    }
}

impl LlamaEngine {
    /// Loads the model (hashing it for its identity unless the config
    /// carries it) and starts the decode loop on its own thread.
    pub fn load(config: LlamaConfig) -> Result<Self, LoadError> {
        let identity = match &config.identity {
            Some(identity) => identity.clone(),
            None => cocoon_engine::model::local_model(&config.model_path)?.identity,
        };
        let (jobs, queue) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, String>>();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let thread_in_flight = in_flight.clone();
        let thread_config = config.clone();
        std::thread::Builder::new()
            .name("llama-decode".into())
            .spawn(move || decode_thread(thread_config, queue, ready_tx, thread_in_flight))
            .map_err(|e| LoadError::Llama {
                path: config.model_path.clone(),
                reason: e.to_string(),
            })?;
        let architecture = ready_rx
            .recv()
            .map_err(|_| "decode thread died while loading".to_string())
            .and_then(|r| r)
            .map_err(|reason| LoadError::Llama {
                path: config.model_path.clone(),
                reason,
            })?;
        Ok(Self {
            jobs,
            info: ModelInfo {
                identity,
                architecture,
                n_ctx_per_seq: config.n_ctx_per_seq,
                max_sequences: config.max_sequences,
            },
            in_flight,
            capacity: config.max_sequences as usize + config.max_queued,
        })
    }

    /// Facts about the loaded model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Requests running or queued.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Runs `f` on the decode thread, between two steps of the loop, and
    /// returns its result. llama.cpp's OpenMP thread team belongs to the OS
    /// thread that computes; a second computing thread in the process makes
    /// two teams contend for the cores. Whatever else must run llama.cpp in
    /// this process (the benchmark's baseline) should run here.
    pub fn run_on_decode_thread<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, EngineError> {
        let (tx, rx) = mpsc::channel();
        let call = Box::new(move || {
            let _ = tx.send(f());
        });
        self.jobs
            .send(Command::Call(call))
            .map_err(|_| EngineError::Internal("the decode loop has stopped".into()))?;
        rx.recv()
            .map_err(|_| EngineError::Internal("the decode thread dropped the call".into()))
    }
}

impl Engine for LlamaEngine {
    fn models(&self) -> Vec<String> {
        vec![self.info.identity.to_string()]
    }

    fn features(&self) -> cocoon_engine::Features {
        cocoon_engine::Features::ALL
    }

    fn generate(&self, request: EngineRequest) -> Result<Generation, EngineError> {
        let id = &self.info.identity;
        if request.model != id.name && request.model != id.to_string() {
            return Err(EngineError::UnknownModel(request.model));
        }
        let n = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if n >= self.capacity {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(EngineError::Overloaded(n));
        }
        let (tx, rx) = cocoon_engine::engine::generation();
        if self
            .jobs
            .send(Command::Generate(Box::new(Job { request, tx })))
            .is_err()
        {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(EngineError::Internal("the decode loop has stopped".into()));
        }
        Ok(rx)
    }
}

fn decode_thread(
    config: LlamaConfig,
    queue: mpsc::Receiver<Command>,
    ready: mpsc::Sender<Result<String, String>>,
    in_flight: Arc<AtomicUsize>,
) {
    let loaded = (|| {
        let backend = crate::backend::backend()?;
        let show_progress = config.progress && std::io::stderr().is_terminal();
        let mut params = LlamaModelParams::default();
        if show_progress {
            params = params.with_progress_callback(progress_bar);
        }
        let model = LlamaModel::load_from_file(backend, &config.model_path, &params)
            .map_err(|e| e.to_string())?;
        if show_progress {
            eprintln!();
        }
        let threads = config.threads.unwrap_or_else(default_threads);
        let ctx_params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(config.n_ctx_per_seq * config.max_sequences))
            .with_n_batch(config.n_batch)
            .with_n_ubatch(config.n_batch)
            .with_n_seq_max(config.max_sequences)
            .with_n_threads(threads)
            .with_n_threads_batch(threads);
        let arch = model
            .meta_val_str("general.architecture")
            .unwrap_or_else(|_| "unknown".into());
        Ok::<_, String>((backend, model, ctx_params, arch))
    })();
    let (backend, model, ctx_params, arch) = match loaded {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let ctx = match model.new_context(backend, ctx_params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(format!("cannot create a context: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(arch));
    let mut scheduler = Scheduler::new(&model, ctx, &config, in_flight);
    scheduler.run(&queue);
}

/// Threads for llama.cpp when none are named: every core this process may use.
pub(crate) fn default_threads() -> i32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as i32)
        .unwrap_or(2)
}

fn progress_bar(p: f32) -> bool {
    let width = 30;
    let done = ((p.clamp(0.0, 1.0)) * width as f32) as usize;
    eprint!(
        "\rloading model [{}{}] {:3.0}%",
        "#".repeat(done),
        ".".repeat(width - done),
        p * 100.0
    );
    true
}

/// One running request.
struct Seq {
    tx: GenerationSender,
    /// Prompt tokens not yet decoded.
    pending: Vec<LlamaToken>,
    /// The sampled token to feed next.
    next: Option<LlamaToken>,
    /// Where this sequence's logits are in the current batch.
    logits_at: Option<i32>,
    sampler: LlamaSampler,
    /// The response format's grammar, when the answer is constrained (see [`sample`]).
    grammar: Option<LlamaSampler>,
    utf8: Utf8Buffer,
    stop: StopMatcher,
    think: ThinkTracker,
    usage: Usage,
    max_tokens: u64,
    /// Text not yet delivered (the reader's channel was full).
    outbox: String,
    /// Events to deliver before `outbox` (text that came before a tool call, and the call).
    queued: std::collections::VecDeque<Event>,
    /// Finds tool calls in the text, when the request lets the model call tools.
    tools: Option<ToolCallParser>,
    /// The call the grammar forces (`tool_choice` required or named), streamed as it is written.
    forced: Option<ForcedCall>,
    /// Tool calls sent so far (the next one's index).
    calls_sent: u32,
    /// `logprobs`: how many alternatives to report per token (`None`: no log probabilities).
    logprobs: Option<u8>,
    /// Log probabilities of sampled tokens not yet delivered.
    pending_logprobs: Vec<cocoon_engine::TokenLogprob>,
    /// Benchmarks: do not stop at end-of-sequence.
    ignore_eos: bool,
    /// The sampler is plain greedy (temperature 0, no bias or penalties): its choice is the
    /// highest raw logit, so under a grammar the choice is the highest one the grammar allows.
    greedy: bool,
}

struct Slot {
    seq: Option<Seq>,
    /// The tokens in this slot's KV cache, by position.
    history: Vec<LlamaToken>,
}

/// The last events of a finished request, delivered as the reader makes
/// room: the loop never waits on one slow (or hostile) reader.
struct Finishing {
    tx: GenerationSender,
    items: std::collections::VecDeque<Result<Event, EngineError>>,
}

struct Scheduler<'m> {
    finishing: Vec<Finishing>,
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    slots: Vec<Slot>,
    n_batch: usize,
    n_ctx_per_seq: u32,
    in_flight: Arc<AtomicUsize>,
}

impl<'m> Scheduler<'m> {
    fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        config: &LlamaConfig,
        in_flight: Arc<AtomicUsize>,
    ) -> Self {
        Self {
            finishing: Vec::new(),
            model,
            ctx,
            batch: LlamaBatch::new(config.n_batch as usize, 1),
            slots: (0..config.max_sequences)
                .map(|_| Slot {
                    seq: None,
                    history: Vec::new(),
                })
                .collect(),
            n_batch: config.n_batch as usize,
            n_ctx_per_seq: config.n_ctx_per_seq,
            in_flight,
        }
    }

    fn active(&self) -> usize {
        self.slots.iter().filter(|s| s.seq.is_some()).count()
    }

    fn run(&mut self, queue: &mpsc::Receiver<Command>) {
        loop {
            if !self.admit(queue) {
                return;
            }
            if self.active() == 0 {
                continue;
            }
            self.step();
            self.flush_finishing();
        }
    }

    /// Moves queued jobs into free slots. Blocks when nothing runs. Returns
    /// false when the engine was dropped and nothing is left to do.
    fn admit(&mut self, queue: &mpsc::Receiver<Command>) -> bool {
        while self.slots.iter().any(|s| s.seq.is_none()) {
            self.flush_finishing();
            let command = if self.active() == 0 && self.finishing.is_empty() {
                match queue.recv() {
                    Ok(c) => c,
                    Err(_) => return false,
                }
            } else if self.active() == 0 {
                // Only deliveries pending: wait a little for work, then retry them.
                match queue.recv_timeout(std::time::Duration::from_millis(5)) {
                    Ok(c) => c,
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                }
            } else {
                match queue.try_recv() {
                    Ok(c) => c,
                    Err(_) => return true,
                }
            };
            let job = match command {
                Command::Generate(job) => job,
                Command::Call(f) => {
                    f();
                    continue;
                }
            };
            if job.tx.is_cancelled() {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                continue;
            }
            if let Err(e) = self.start(job.request, job.tx.clone()) {
                // A fresh channel: there is room for this one item.
                job.tx.try_send(Err(e));
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        }
        true
    }

    fn start(&mut self, request: EngineRequest, tx: GenerationSender) -> Result<(), EngineError> {
        // Tools are shown to the model (and looked for in its answer) unless the caller said none.
        let tools = match request.tool_choice {
            ToolChoice::None => &[][..],
            _ => &request.tools[..],
        };
        let (text, format) = match &request.prompt {
            // The template refusing the conversation is the client's problem (400).
            Prompt::Chat(messages) => {
                let r = crate::template::render(self.model, messages, tools).map_err(|e| {
                    EngineError::Request(cocoon_engine::RequestError::InvalidField {
                        field: "messages".into(),
                        reason: e.to_string(),
                    })
                })?;
                (r.text, r.format)
            }
            Prompt::Text(t) => (t.clone(), ToolFormat::Hermes),
        };
        let vocab = self.model.vocab();
        let bos_text = vocab.token_to_piece(vocab.bos(), true, None);
        let add_special = !text.as_bytes().starts_with(&bos_text) || bos_text.is_empty();
        let tokens = vocab.tokenize(text.as_bytes(), add_special, true);
        if tokens.is_empty() {
            return Err(EngineError::Request(
                cocoon_engine::RequestError::InvalidField {
                    field: "prompt".into(),
                    reason: "is empty".into(),
                },
            ));
        }
        if tokens.len() >= self.n_ctx_per_seq as usize {
            return Err(EngineError::PromptTooLong {
                prompt: tokens.len(),
                context: self.n_ctx_per_seq as usize,
            });
        }
        // The free slot whose cache shares the longest prefix with this prompt.
        let (slot_index, reuse) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.seq.is_none())
            .map(|(i, s)| (i, common_prefix(&s.history, &tokens)))
            .max_by_key(|&(_, n)| n)
            .ok_or_else(|| EngineError::Internal("no free slot".into()))?;
        // Decode at least the last prompt token, to get logits for it.
        let reuse = reuse.min(tokens.len() - 1);
        self.ctx
            .clear_kv_cache_seq(Some(slot_index as u32), Some(reuse as u32), None)
            .map_err(|e| EngineError::Internal(e.to_string()))?;
        let slot = &mut self.slots[slot_index];
        slot.history.truncate(reuse);
        let room = u64::from(self.n_ctx_per_seq) - tokens.len() as u64;
        // A call the grammar forces starts at once: the model never thinks first, whatever the
        // prompt opened.
        let forced = !request.tool_choice.forced_tools(tools).is_empty()
            && request.response_format.is_none();
        let think = if forced {
            ThinkTracker::default()
        } else {
            ThinkTracker::for_prompt(&text)
        };
        slot.seq = Some(Seq {
            tx,
            pending: tokens[reuse..].to_vec(),
            next: None,
            logits_at: None,
            sampler: {
                check_vocabulary(&request, self.model)?;
                sampler(&request, self.model)
            },
            grammar: grammar(&request, format, self.model)?,
            utf8: Utf8Buffer::default(),
            stop: StopMatcher::new(request.stop.clone()),
            think,
            tools: (!tools.is_empty() && !forced)
                .then(|| ToolCallParser::new(format, tools, think.inside())),
            forced: forced.then(|| ForcedCall::new(format, tools, &request.tool_choice)),
            queued: std::collections::VecDeque::new(),
            calls_sent: 0,
            logprobs: request.logprobs,
            pending_logprobs: Vec::new(),
            usage: Usage {
                prompt_tokens: tokens.len() as u64,
                cached_tokens: reuse as u64,
                ..Usage::default()
            },
            max_tokens: request.max_tokens.map_or(room, |m| u64::from(m).min(room)),
            outbox: String::new(),
            ignore_eos: request.ignore_eos,
            greedy: is_plain_greedy(&request),
        });
        Ok(())
    }

    /// One decode call over every running sequence.
    fn step(&mut self) {
        self.batch.clear();
        // Decoding sequences first: one token each keeps them all moving.
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(seq) = slot.seq.as_mut() else {
                continue;
            };
            if let Some(t) = seq.next.take() {
                // The next position is the number of tokens in the slot's cache.
                let pos = slot.history.len() as i32;
                if self.batch.add(t, pos, &[i as i32], true).is_err() {
                    seq.next = Some(t);
                    continue;
                }
                seq.logits_at = Some(self.batch.n_tokens() - 1);
                slot.history.push(t);
            }
        }
        // Then as much pending prompt as fits.
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let room = self.n_batch.saturating_sub(self.batch.n_tokens() as usize);
            if room == 0 {
                break;
            }
            let Some(seq) = slot.seq.as_mut() else {
                continue;
            };
            if seq.pending.is_empty() {
                continue;
            }
            let take = room.min(seq.pending.len());
            let finishes = take == seq.pending.len();
            for (j, &t) in seq.pending[..take].iter().enumerate() {
                let last = finishes && j == take - 1;
                let _ = self
                    .batch
                    .add(t, slot.history.len() as i32, &[i as i32], last);
                slot.history.push(t);
            }
            seq.pending.drain(..take);
            if finishes {
                seq.logits_at = Some(self.batch.n_tokens() - 1);
            }
        }
        if self.batch.n_tokens() == 0 {
            return;
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            self.fail_all(EngineError::Internal(format!("decode failed: {e}")));
            return;
        }
        for i in 0..self.slots.len() {
            self.sample(i);
        }
    }

    fn sample(&mut self, i: usize) {
        let Some(seq) = self.slots[i].seq.as_mut() else {
            return;
        };
        if seq.tx.is_cancelled() {
            self.release(i);
            return;
        }
        let Some(at) = seq.logits_at.take() else {
            flush(seq);
            return;
        };
        let token = sample(seq, &self.ctx, at);
        let vocab = self.model.vocab();
        if vocab.is_eog(token) && !seq.ignore_eos {
            self.finish(i, FinishReason::Stop);
            return;
        }
        let slot = &mut self.slots[i];
        let seq = slot.seq.as_mut().expect("checked above");
        seq.usage.completion_tokens += 1;
        // `<think>`/`</think>` are ordinary (non-control) tokens in the
        // reasoning families, so the rendered piece shows them.
        let bytes = vocab.token_to_piece(token, false, None);
        if let Some(k) = seq.logprobs {
            let entry = token_logprob(self.model, self.ctx.get_logits_ith(at), token, k);
            seq.pending_logprobs.push(entry);
        }
        seq.think.token(&String::from_utf8_lossy(&bytes));
        let text = seq.utf8.push(&bytes);
        match seq.stop.push(&text) {
            StopOutcome::Continue(t) => deliver(seq, &t),
            StopOutcome::Stopped(t) => {
                deliver(seq, &t);
                self.finish(i, FinishReason::Stop);
                return;
            }
        }
        let full = slot.history.len() as u64 + 1 >= u64::from(self.n_ctx_per_seq);
        if seq.usage.completion_tokens >= seq.max_tokens || full {
            self.finish(i, FinishReason::Length);
            return;
        }
        seq.next = Some(token);
        flush(seq);
    }

    fn finish(&mut self, i: usize, reason: FinishReason) {
        if let Some(mut seq) = self.slots[i].seq.take() {
            let tail = seq.utf8.finish();
            let tail = match seq.stop.push(&tail) {
                StopOutcome::Continue(t) => t + &seq.stop.finish(),
                StopOutcome::Stopped(t) => t,
            };
            deliver(&mut seq, &tail);
            if let Some(parser) = seq.tools.as_mut() {
                let rest = parser.finish();
                receive(&mut seq, rest);
            }
            seq.usage.reasoning_tokens = seq.think.reasoning_tokens;
            let called = seq.calls_sent > 0;
            let reason = match reason {
                FinishReason::Stop if called => FinishReason::ToolCalls,
                r => r,
            };
            queue_logprobs(&mut seq);
            let mut items: std::collections::VecDeque<_> = std::mem::take(&mut seq.queued)
                .into_iter()
                .map(Ok)
                .collect();
            if !seq.outbox.is_empty() {
                items.push_back(Ok(Event::Text(std::mem::take(&mut seq.outbox))));
            }
            items.push_back(Ok(Event::Done {
                usage: seq.usage,
                finish_reason: reason,
            }));
            self.finishing.push(Finishing { tx: seq.tx, items });
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.flush_finishing();
        }
    }

    /// Delivers what finished requests still owe their readers, as far as
    /// their channels have room; drops readers that went away.
    fn flush_finishing(&mut self) {
        self.finishing.retain_mut(|f| {
            while let Some(item) = f.items.pop_front() {
                match f.tx.try_send(item) {
                    TrySend::Sent => {}
                    TrySend::Full(item) => {
                        f.items.push_front(item);
                        return true;
                    }
                    TrySend::Closed => return false,
                }
            }
            false
        });
    }

    /// Frees a slot whose reader went away; its cache stays reusable.
    fn release(&mut self, i: usize) {
        if self.slots[i].seq.take().is_some() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    fn fail_all(&mut self, e: EngineError) {
        for i in 0..self.slots.len() {
            if let Some(seq) = self.slots[i].seq.take() {
                let items = std::collections::VecDeque::from([Err(e.clone())]);
                self.finishing.push(Finishing { tx: seq.tx, items });
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                let _ = self.ctx.clear_kv_cache_seq(Some(i as u32), None, None);
                self.slots[i].history.clear();
            }
        }
        self.flush_finishing();
    }
}

/// Takes text the stop matcher released: looked through for tool calls when the request has
/// tools, else straight to the outbox.
fn deliver(seq: &mut Seq, text: &str) {
    if let Some(forced) = seq.forced.as_mut() {
        for delta in forced.push(text) {
            queue_logprobs(seq);
            seq.calls_sent = 1;
            seq.queued.push_back(Event::ToolCall(delta));
        }
        return;
    }
    match seq.tools.as_mut() {
        Some(parser) => {
            let parsed = parser.push(text);
            receive(seq, parsed);
        }
        None => seq.outbox.push_str(text),
    }
}

/// Queues the log probabilities of tokens sampled so far (before what those tokens make).
fn queue_logprobs(seq: &mut Seq) {
    if !seq.pending_logprobs.is_empty() {
        let l = std::mem::take(&mut seq.pending_logprobs);
        seq.queued.push_back(Event::Logprobs(l));
    }
}

/// Queues what the tool-call parser found: text to the outbox, a call (after the text before
/// it) as one event.
fn receive(seq: &mut Seq, parsed: Vec<Parsed>) {
    for p in parsed {
        match p {
            // The whitespace models write between and after calls is not content.
            Parsed::Text(t) if seq.calls_sent > 0 && t.trim().is_empty() => {}
            Parsed::Text(t) => seq.outbox.push_str(&t),
            Parsed::Call(call) => {
                queue_logprobs(seq);
                if !seq.outbox.is_empty() {
                    seq.queued
                        .push_back(Event::Text(std::mem::take(&mut seq.outbox)));
                }
                seq.queued
                    .push_back(Event::ToolCall(call.as_delta(seq.calls_sent)));
                seq.calls_sent += 1;
            }
        }
    }
}

/// The log probability of `token` among `logits` (a log-softmax over the whole vocabulary),
/// with the `k` most likely tokens.
fn token_logprob(
    model: &LlamaModel,
    logits: &[f32],
    token: LlamaToken,
    k: u8,
) -> cocoon_engine::TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_sum = max
        + logits
            .iter()
            .map(|l| f64::from(l - max).exp())
            .sum::<f64>()
            .ln() as f32;
    let piece = |t: LlamaToken| {
        let bytes = model.vocab().token_to_piece(t, false, None);
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    };
    let (text, bytes) = piece(token);
    cocoon_engine::TokenLogprob {
        token: text,
        bytes,
        logprob: logits
            .get(token.0 as usize)
            .map_or(f32::NEG_INFINITY, |l| l - log_sum),
        top: top_ids(logits, usize::from(k))
            .into_iter()
            .map(|id| {
                let (t, b) = piece(LlamaToken(id as i32));
                (t, b, logits[id] - log_sum)
            })
            .collect(),
    }
}

/// Delivers pending events and text without blocking the loop.
fn flush(seq: &mut Seq) {
    // Before the text their tokens make.
    queue_logprobs(seq);
    while let Some(event) = seq.queued.pop_front() {
        match seq.tx.try_send(Ok(event)) {
            TrySend::Sent => {}
            TrySend::Full(Ok(event)) => {
                seq.queued.push_front(event);
                return;
            }
            TrySend::Full(Err(_)) | TrySend::Closed => return,
        }
    }
    if seq.outbox.is_empty() {
        return;
    }
    let text = std::mem::take(&mut seq.outbox);
    if let TrySend::Full(Ok(Event::Text(t))) = seq.tx.try_send(Ok(Event::Text(text))) {
        seq.outbox = t;
    }
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// A JSON object and nothing else (the answer to `response_format: json_object`), in GBNF.
/// Whitespace between tokens is bounded so the model cannot pad forever.
pub fn json_object_grammar() -> String {
    format!(
        "root ::= any-object\n{}{}",
        cocoon_engine::schema::ANY_OBJECT,
        cocoon_engine::schema::BASICS
    )
}

/// A `logit_bias` naming a token the model does not have is refused (400), naming it.
fn check_vocabulary(request: &EngineRequest, model: &LlamaModel) -> Result<(), EngineError> {
    let n_vocab = u32::try_from(model.n_vocab()).unwrap_or(0);
    match request
        .sampling
        .logit_bias
        .iter()
        .find(|(id, _)| *id >= n_vocab)
    {
        Some((id, _)) => Err(EngineError::Request(
            cocoon_engine::RequestError::InvalidField {
                field: format!("logit_bias.{id}"),
                reason: format!("is not a token of this model ({n_vocab} tokens)"),
            },
        )),
        None => Ok(()),
    }
}

/// The grammar a request asks for, if any (only tokens that keep the answer valid): its
/// response format's, or a call of the tool its `tool_choice` requires, in `format`.
fn grammar(
    request: &EngineRequest,
    format: ToolFormat,
    model: &LlamaModel,
) -> Result<Option<LlamaSampler>, EngineError> {
    let text = match &request.response_format {
        Some(ResponseFormat::JsonObject) => json_object_grammar(),
        Some(ResponseFormat::JsonSchema { grammar, .. }) => grammar.clone(),
        None => match format.grammar(&request.tools, &request.tool_choice) {
            Some(g) => g,
            None => return Ok(None),
        },
    };
    LlamaSampler::grammar(model, &text, "root")
        .map(Some)
        .map_err(|e| EngineError::Internal(format!("the request's grammar: {e}")))
}

/// Whether the request samples greedily with nothing reordering the raw logits.
fn is_plain_greedy(request: &EngineRequest) -> bool {
    let s = &request.sampling;
    s.temperature.is_some_and(|t| t <= 0.0)
        && s.logit_bias.is_empty()
        && s.frequency_penalty.unwrap_or(0.0) == 0.0
        && s.presence_penalty.unwrap_or(0.0) == 0.0
}

/// The ids of the `k` highest logits, highest first (fewer when the vocabulary is smaller).
fn top_ids(logits: &[f32], k: usize) -> Vec<usize> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    let mut ids: Vec<usize> = (0..logits.len()).collect();
    ids.select_nth_unstable_by(k - 1, |a, b| logits[*b].total_cmp(&logits[*a]));
    ids.truncate(k);
    ids.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]));
    ids
}

/// Most tokens checked one by one before the whole vocabulary is filtered.
const GREEDY_GRAMMAR_CANDIDATES: usize = 32;

/// The highest-logit token among the [`GREEDY_GRAMMAR_CANDIDATES`] most likely that `grammar`
/// allows, if any.
fn best_allowed(grammar: &mut LlamaSampler, logits: &[f32]) -> Option<LlamaToken> {
    top_ids(logits, GREEDY_GRAMMAR_CANDIDATES)
        .into_iter()
        .map(|id| LlamaToken(id as i32))
        .find(|&token| {
            let mut one = LlamaTokenDataArray::from_iter(
                [LlamaTokenData::new(token, logits[token.0 as usize], 0.0)],
                false,
            );
            grammar.apply(&mut one);
            one.data.first().is_some_and(|d| d.logit().is_finite())
        })
}

/// The next token of `seq` from the logits at `at`. With a grammar, the unconstrained choice
/// is tried first and checked against the grammar alone (one token, not the whole vocabulary);
/// only when the grammar refuses it are all candidates filtered by the grammar and the choice
/// made again — the same answers as filtering every step, at a fraction of the cost.
fn sample(seq: &mut Seq, ctx: &LlamaContext<'_>, at: i32) -> LlamaToken {
    let Some(grammar) = seq.grammar.as_mut() else {
        return seq.sampler.sample(ctx, at);
    };
    let candidates = || {
        LlamaTokenDataArray::from_iter(
            ctx.get_logits_ith(at)
                .iter()
                .enumerate()
                .map(|(id, logit)| LlamaTokenData::new(LlamaToken(id as i32), *logit, 0.0)),
            false,
        )
    };
    let mut all = candidates();
    seq.sampler.apply(&mut all);
    let chosen = all.selected_token();
    let allowed = chosen.is_some_and(|token| {
        let logit = ctx.get_logits_ith(at)[token.0 as usize];
        let mut one =
            LlamaTokenDataArray::from_iter([LlamaTokenData::new(token, logit, 0.0)], false);
        grammar.apply(&mut one);
        one.data.first().is_some_and(|d| d.logit().is_finite())
    });
    let token = match (chosen, allowed) {
        (Some(token), true) => token,
        // Greedy: the best of the most likely tokens that the grammar allows, each checked
        // alone — where the grammar forces its own text (a call's markup, a property name)
        // that is usually among them, and far cheaper than filtering the whole vocabulary.
        _ => match seq
            .greedy
            .then(|| best_allowed(grammar, ctx.get_logits_ith(at)))
            .flatten()
        {
            Some(token) => token,
            None => {
                let mut all = candidates();
                grammar.apply(&mut all);
                seq.sampler.apply(&mut all);
                // The grammar always allows something (at worst the end of the sequence).
                all.selected_token().unwrap_or(LlamaToken(0))
            }
        },
    };
    grammar.accept(token);
    seq.sampler.accept(token);
    token
}

/// The sampler chain for a request: penalties, top-k, top-p, temperature, then a seeded draw
/// (greedy at temperature 0).
fn sampler(request: &EngineRequest, model: &LlamaModel) -> LlamaSampler {
    let s = &request.sampling;
    let temperature = s.temperature.unwrap_or(0.8);
    let mut chain = Vec::new();
    if !s.logit_bias.is_empty() {
        let biases: Vec<LlamaLogitBias> = s
            .logit_bias
            .iter()
            .map(|(id, b)| LlamaLogitBias::new(LlamaToken(*id as i32), *b))
            .collect();
        chain.push(LlamaSampler::logit_bias(model.n_vocab(), &biases));
    }
    let (freq, presence) = (
        s.frequency_penalty.unwrap_or(0.0),
        s.presence_penalty.unwrap_or(0.0),
    );
    if freq != 0.0 || presence != 0.0 {
        chain.push(LlamaSampler::penalties(
            model.n_vocab(),
            64,
            1.0,
            freq,
            presence,
        ));
    }
    if temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
        return LlamaSampler::chain_simple(chain);
    }
    let top_k = s.top_k.unwrap_or(40);
    if top_k > 0 {
        chain.push(LlamaSampler::top_k(top_k));
    }
    chain.push(LlamaSampler::top_p(s.top_p.unwrap_or(0.95), 1));
    chain.push(LlamaSampler::temp(temperature));
    let seed = s.seed.map(|v| v as u32).unwrap_or_else(random_seed);
    chain.push(LlamaSampler::dist(seed));
    LlamaSampler::chain_simple(chain)
}

fn random_seed() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    u32::from_le_bytes(b)
}
