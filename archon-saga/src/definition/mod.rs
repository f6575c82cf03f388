//! Saga definitions: a typed builder whose API enforces the step kinds.

mod mermaid;
mod retry;
mod step;

use std::{fmt, future::Future, marker::PhantomData, sync::Arc, time::Duration};

use futures::{FutureExt, future::BoxFuture};
use serde::{Serialize, de::DeserializeOwned};

pub use self::{
    retry::RetryPolicy,
    step::{ErrorKind, StepContext, StepError, StepResult, idempotency_key},
};
use crate::{Error, Result};

/// What the data type of a saga must be: serde-serialisable, cloneable and sendable.
///
/// Blanket-implemented; you never implement it yourself.
///
/// ```
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Order { id: u64 }
/// fn takes<D: archon_saga::SagaData>() {}
/// takes::<Order>();
/// ```
pub trait SagaData: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> SagaData for T {}

/// The kind of a step, in the order the builder allows them.
///
/// ```
/// assert_eq!(archon_saga::StepKind::Pivot.to_string(), "pivot");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// Has a compensation; undone in reverse order when a later step fails.
    Compensatable,
    /// The point of no return: no compensation; once it succeeds the saga goes forward only.
    Pivot,
    /// After the pivot: retried until it succeeds, or the saga parks. Never compensated.
    Retriable,
}

impl fmt::Display for StepKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Compensatable => "compensatable",
            Self::Pivot => "pivot",
            Self::Retriable => "retriable",
        })
    }
}

/// Result of running an erased step on encoded data.
pub(crate) enum Outcome {
    Done(String),
    Failed(StepError),
    Corrupt(serde_json::Error),
}

pub(crate) type ErasedFn =
    Arc<dyn Fn(StepContext, &str) -> BoxFuture<'static, Outcome> + Send + Sync>;

fn erase<D, F, Fut>(f: F) -> ErasedFn
where
    D: SagaData,
    F: Fn(StepContext, D) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = StepResult<D>> + Send + 'static,
{
    Arc::new(move |ctx, raw| match serde_json::from_str::<D>(raw) {
        Err(e) => futures::future::ready(Outcome::Corrupt(e)).boxed(),
        Ok(data) => f(ctx, data)
            .map(|r| match r {
                Ok(d) => match serde_json::to_string(&d) {
                    Ok(s) => Outcome::Done(s),
                    Err(e) => Outcome::Failed(StepError::fatal(format!("encoding saga data: {e}"))),
                },
                Err(e) => Outcome::Failed(e),
            })
            .boxed(),
    })
}

/// One step, erased.
#[derive(Clone)]
pub(crate) struct StepDef {
    pub(crate) name: String,
    pub(crate) kind: StepKind,
    pub(crate) action: ErasedFn,
    pub(crate) compensation: Option<ErasedFn>,
    pub(crate) retry: RetryPolicy,
    pub(crate) compensation_retry: RetryPolicy,
    pub(crate) timeout: Option<Duration>,
}

impl fmt::Debug for StepDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StepDef")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Marker: a step with a compensation.
#[derive(Debug, Clone, Copy)]
pub struct Compensatable;
/// Marker: the pivot step.
#[derive(Debug, Clone, Copy)]
pub struct Pivot;
/// Marker: a step after the pivot, retried until it succeeds.
#[derive(Debug, Clone, Copy)]
pub struct Retriable;

/// A step of kind `K` over saga data `D`, before it is added to a [`SagaBuilder`].
///
/// ```
/// use std::time::Duration;
/// use archon_saga::{RetryPolicy, Step, StepContext, StepResult};
///
/// async fn reserve(_ctx: StepContext, n: u32) -> StepResult<u32> { Ok(n) }
/// async fn release(_ctx: StepContext, n: u32) -> StepResult<u32> { Ok(n) }
///
/// let step = Step::compensatable("reserve", reserve, release)
///     .retry(RetryPolicy::exponential(5, Duration::from_millis(200)))
///     .timeout(Duration::from_secs(2));
/// ```
pub struct Step<D, K> {
    def: StepDef,
    _marker: PhantomData<(fn() -> D, K)>,
}

impl<D, K> fmt::Debug for Step<D, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.def.fmt(f)
    }
}

impl<D: SagaData, K> Step<D, K> {
    fn with(name: &str, kind: StepKind, action: ErasedFn, compensation: Option<ErasedFn>) -> Self {
        let retry = match kind {
            StepKind::Retriable => RetryPolicy::exponential(10, Duration::from_millis(500))
                .max_delay(Duration::from_secs(60)),
            _ => RetryPolicy::default(),
        };
        Self {
            def: StepDef {
                name: name.to_owned(),
                kind,
                action,
                compensation,
                retry,
                compensation_retry: RetryPolicy::exponential(10, Duration::from_millis(500))
                    .max_delay(Duration::from_secs(60)),
                timeout: None,
            },
            _marker: PhantomData,
        }
    }

    /// The retry policy for transient failures (and timeouts) of the step itself.
    ///
    /// Defaults: 3 attempts for compensatable and pivot steps (then compensate), 10 for
    /// retriable steps (then park).
    ///
    /// ```
    /// # use archon_saga::{RetryPolicy, Step, StepContext, StepResult};
    /// # async fn ship(_c: StepContext, n: u32) -> StepResult<u32> { Ok(n) }
    /// let s = Step::retriable("ship", ship).retry(RetryPolicy::none());
    /// ```
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.def.retry = policy;
        self
    }

    /// A timeout for each attempt; a timed-out attempt is a transient failure.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use archon_saga::{Step, StepContext, StepResult};
    /// # async fn ship(_c: StepContext, n: u32) -> StepResult<u32> { Ok(n) }
    /// let s = Step::retriable("ship", ship).timeout(Duration::from_secs(5));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.def.timeout = Some(timeout);
        self
    }
}

impl<D: SagaData> Step<D, Compensatable> {
    /// A step with its compensation. The compensation must tolerate the step never having
    /// happened and being run twice (it gets its own deterministic idempotency key).
    ///
    /// ```
    /// # use archon_saga::{Step, StepContext, StepResult};
    /// # async fn reserve(_c: StepContext, n: u32) -> StepResult<u32> { Ok(n) }
    /// # async fn release(_c: StepContext, n: u32) -> StepResult<u32> { Ok(n) }
    /// let s = Step::compensatable("reserve", reserve, release);
    /// ```
    pub fn compensatable<F, Fut, C, CFut>(name: &str, action: F, compensation: C) -> Self
    where
        F: Fn(StepContext, D) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepResult<D>> + Send + 'static,
        C: Fn(StepContext, D) -> CFut + Send + Sync + 'static,
        CFut: Future<Output = StepResult<D>> + Send + 'static,
    {
        Self::with(
            name,
            StepKind::Compensatable,
            erase(action),
            Some(erase(compensation)),
        )
    }

    /// The retry policy of the compensation (default: 10 attempts, exponential from 500 ms,
    /// capped at 60 s; then the saga parks). Every compensation error is retried except
    /// [`ErrorKind::Fatal`], which parks at once.
    ///
    /// ```
    /// # use archon_saga::{RetryPolicy, Step, StepContext, StepResult};
    /// # async fn reserve(_c: StepContext, n: u32) -> StepResult<u32> { Ok(n) }
    /// # async fn release(_c: StepContext, n: u32) -> StepResult<u32> { Ok(n) }
    /// let s = Step::compensatable("reserve", reserve, release)
    ///     .compensation_retry(RetryPolicy::default().forever());
    /// ```
    pub fn compensation_retry(mut self, policy: RetryPolicy) -> Self {
        self.def.compensation_retry = policy;
        self
    }
}

impl<D: SagaData> Step<D, Pivot> {
    /// The pivot: the go/no-go step, never compensated.
    ///
    /// ```
    /// # use archon_saga::{Step, StepContext, StepResult};
    /// # async fn charge(_c: StepContext, n: u32) -> StepResult<u32> { Ok(n) }
    /// let s = Step::pivot("charge", charge);
    /// ```
    pub fn pivot<F, Fut>(name: &str, action: F) -> Self
    where
        F: Fn(StepContext, D) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepResult<D>> + Send + 'static,
    {
        Self::with(name, StepKind::Pivot, erase(action), None)
    }
}

impl<D: SagaData> Step<D, Retriable> {
    /// A step after the pivot, retried until it succeeds (or parks).
    ///
    /// ```
    /// # use archon_saga::{Step, StepContext, StepResult};
    /// # async fn ship(_c: StepContext, n: u32) -> StepResult<u32> { Ok(n) }
    /// let s = Step::retriable("ship", ship);
    /// ```
    pub fn retriable<F, Fut>(name: &str, action: F) -> Self
    where
        F: Fn(StepContext, D) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = StepResult<D>> + Send + 'static,
    {
        Self::with(name, StepKind::Retriable, erase(action), None)
    }
}

/// The erased definition the engine runs.
#[derive(Debug)]
pub(crate) struct SagaDef {
    pub(crate) name: String,
    pub(crate) version: u32,
    pub(crate) deadline: Option<Duration>,
    pub(crate) steps: Vec<StepDef>,
}

impl SagaDef {
    pub(crate) fn key(&self) -> String {
        definition_key(&self.name, self.version)
    }

    /// Index of the first retriable step (= number of steps that may still be compensated
    /// or cancelled before).
    pub(crate) fn first_retriable(&self) -> usize {
        self.steps
            .iter()
            .position(|s| s.kind == StepKind::Retriable)
            .unwrap_or(self.steps.len())
    }

    /// True if the saga can still compensate when its cursor is at `step`.
    pub(crate) fn can_compensate_at(&self, step: usize) -> bool {
        let pivot_done = self
            .steps
            .iter()
            .take(step)
            .any(|s| s.kind == StepKind::Pivot);
        !pivot_done && step <= self.first_retriable() && step < self.steps.len()
    }
}

pub(crate) fn definition_key(name: &str, version: u32) -> String {
    format!("{name}@v{version}")
}

/// A saga definition over data `D`: named, versioned, with its steps.
///
/// Cheap to clone. Build one with [`Saga::builder`].
///
/// ```
/// use archon_saga::{Saga, Step, StepContext, StepResult};
///
/// #[derive(Clone, serde::Serialize, serde::Deserialize)]
/// struct Order { id: u64, reserved: bool }
///
/// async fn reserve(_ctx: StepContext, mut o: Order) -> StepResult<Order> { o.reserved = true; Ok(o) }
/// async fn release(_ctx: StepContext, mut o: Order) -> StepResult<Order> { o.reserved = false; Ok(o) }
/// async fn charge(_ctx: StepContext, o: Order) -> StepResult<Order> { Ok(o) }
/// async fn ship(_ctx: StepContext, o: Order) -> StepResult<Order> { Ok(o) }
///
/// let saga = Saga::<Order>::builder("place-order")
///     .version(1)
///     .step(Step::compensatable("reserve", reserve, release))
///     .pivot(Step::pivot("charge", charge))
///     .retriable(Step::retriable("ship", ship))
///     .build()
///     .unwrap();
/// assert_eq!(saga.name(), "place-order");
/// assert_eq!(saga.step_names(), vec!["reserve", "charge", "ship"]);
/// ```
pub struct Saga<D> {
    pub(crate) def: Arc<SagaDef>,
    _marker: PhantomData<fn() -> D>,
}

impl<D> Clone for Saga<D> {
    fn clone(&self) -> Self {
        Self {
            def: Arc::clone(&self.def),
            _marker: PhantomData,
        }
    }
}

impl<D> fmt::Debug for Saga<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Saga")
            .field("name", &self.def.name)
            .field("version", &self.def.version)
            .field("steps", &self.def.steps)
            .finish()
    }
}

impl<D: SagaData> Saga<D> {
    /// Start building a definition called `name` (version 1 unless set).
    ///
    /// ```
    /// # use archon_saga::{Saga, Step, StepContext, StepResult};
    /// # async fn ship(_c: StepContext, n: u32) -> StepResult<u32> { Ok(n) }
    /// let saga = Saga::<u32>::builder("ship-only").retriable(Step::retriable("ship", ship)).build();
    /// assert!(saga.is_ok());
    /// ```
    pub fn builder(name: &str) -> SagaBuilder<D, BeforePivot> {
        SagaBuilder {
            name: name.to_owned(),
            version: 1,
            deadline: None,
            steps: Vec::new(),
            _marker: PhantomData,
        }
    }
}

impl<D> Saga<D> {
    /// The definition name.
    pub fn name(&self) -> &str {
        &self.def.name
    }

    /// The definition version.
    pub fn version(&self) -> u32 {
        self.def.version
    }

    /// The step names in order.
    pub fn step_names(&self) -> Vec<&str> {
        self.def.steps.iter().map(|s| s.name.as_str()).collect()
    }

    /// The definition as a Mermaid flowchart (forward path, compensation path, kinds).
    ///
    /// ```
    /// # use archon_saga::{Saga, Step, StepContext, StepResult};
    /// # async fn ok(_c: StepContext, n: u32) -> StepResult<u32> { Ok(n) }
    /// let saga = Saga::<u32>::builder("s").step(Step::compensatable("a", ok, ok)).build().unwrap();
    /// assert!(saga.to_mermaid().starts_with("flowchart LR"));
    /// ```
    pub fn to_mermaid(&self) -> String {
        mermaid::render(&self.def)
    }
}

/// Builder state: compensatable steps may still be added, and the pivot.
#[derive(Debug, Clone, Copy)]
pub struct BeforePivot;
/// Builder state: the pivot (or a retriable step) was added; only retriable steps may follow.
#[derive(Debug, Clone, Copy)]
pub struct AfterPivot;

/// Builds a [`Saga`]; the state parameter makes the step order a compile-time rule:
/// compensatable steps, then at most one pivot, then retriable steps.
///
/// ```compile_fail
/// # use archon_saga::{Saga, Step, StepContext, StepResult};
/// # async fn ok(_c: StepContext, n: u32) -> StepResult<u32> { Ok(n) }
/// // a second pivot does not compile
/// let _ = Saga::<u32>::builder("s").pivot(Step::pivot("a", ok)).pivot(Step::pivot("b", ok));
/// ```
///
/// ```
/// # use std::time::Duration;
/// # use archon_saga::{Saga, Step, StepContext, StepResult};
/// # async fn ok(_c: StepContext, n: u32) -> StepResult<u32> { Ok(n) }
/// let saga = Saga::<u32>::builder("s")
///     .version(2)
///     .deadline(Duration::from_secs(60))
///     .step(Step::compensatable("a", ok, ok))
///     .pivot(Step::pivot("b", ok))
///     .build()
///     .unwrap();
/// assert_eq!(saga.version(), 2);
/// ```
pub struct SagaBuilder<D, S> {
    name: String,
    version: u32,
    deadline: Option<Duration>,
    steps: Vec<StepDef>,
    _marker: PhantomData<(fn() -> D, S)>,
}

impl<D, S> fmt::Debug for SagaBuilder<D, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SagaBuilder")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("steps", &self.steps)
            .finish()
    }
}

impl<D: SagaData, S> SagaBuilder<D, S> {
    fn into_state<T>(self) -> SagaBuilder<D, T> {
        SagaBuilder {
            name: self.name,
            version: self.version,
            deadline: self.deadline,
            steps: self.steps,
            _marker: PhantomData,
        }
    }

    /// The definition version instances are pinned to (default 1).
    pub fn version(mut self, version: u32) -> Self {
        self.version = version;
        self
    }

    /// A deadline from the saga's start: a compensatable step or pivot that has not started by
    /// then is not started; a compensatable step still running then is interrupted (its future
    /// dropped, its compensation run since its outcome is unknown); a retry wait ends at the
    /// deadline; the saga compensates. A running pivot and the steps after it are not affected.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use archon_saga::{Saga, Step, StepContext, StepResult};
    /// # async fn ok(_c: StepContext, n: u32) -> StepResult<u32> { Ok(n) }
    /// let saga = Saga::<u32>::builder("s")
    ///     .deadline(Duration::from_secs(30))
    ///     .step(Step::compensatable("a", ok, ok))
    ///     .build()
    ///     .unwrap();
    /// ```
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Add a retriable step (no more compensatable steps or pivot after it).
    pub fn retriable(mut self, step: Step<D, Retriable>) -> SagaBuilder<D, AfterPivot> {
        self.steps.push(step.def);
        self.into_state()
    }

    /// Finish: fails on an empty saga or duplicate step names.
    pub fn build(self) -> Result<Saga<D>> {
        if self.steps.is_empty() {
            return Err(Error::InvalidDefinition(format!(
                "saga {:?} has no steps",
                self.name
            )));
        }
        let mut names: Vec<&str> = self.steps.iter().map(|s| s.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::InvalidDefinition(format!(
                "saga {:?}: duplicate step name {:?}",
                self.name, w[0]
            )));
        }
        Ok(Saga {
            def: Arc::new(SagaDef {
                name: self.name,
                version: self.version,
                deadline: self.deadline,
                steps: self.steps,
            }),
            _marker: PhantomData,
        })
    }
}

impl<D: SagaData> SagaBuilder<D, BeforePivot> {
    /// Add a compensatable step.
    pub fn step(mut self, step: Step<D, Compensatable>) -> Self {
        self.steps.push(step.def);
        self
    }

    /// Add the pivot (at most one; only retriable steps may follow).
    pub fn pivot(mut self, step: Step<D, Pivot>) -> SagaBuilder<D, AfterPivot> {
        self.steps.push(step.def);
        self.into_state()
    }
}
