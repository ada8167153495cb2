//! A profiling loop for `OTelHook` (not a benchmark with figures to keep; `kaos-bench` is).
//!
//! Runs the bench's offline respond turn (classifier + respond call, 11 events → 4 spans)
//! in a loop and prints the mean time per turn:
//!
//! ```text
//! cargo run --release -p kaos-agents --features otel --example otel_hot_loop -- MODE [TURNS]
//! ```
//!
//! | MODE | what |
//! |---|---|
//! | `off` | turns, no hook |
//! | `on` | turns with `OTelHook` over an SDK provider without a processor (as `kaos-bench`) |
//! | `on-batch` | the same with a `BatchSpanProcessor` and a no-op exporter |
//! | `floor` | the same 4 spans, names, kinds, parents and attributes made directly through the SDK, no hook, no turn (no processor) |
//! | `floor-batch` | `floor` with the batch processor and no-op exporter |
//! | `shape` | prints the spans one hooked turn makes (name, attribute count) |
//! | `all` | `off`, `on`, `floor`, `on-batch`, `floor-batch`, interleaved |

#[cfg(not(feature = "otel"))]
fn main() {
    eprintln!("build with --features otel");
}

#[cfg(feature = "otel")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    hot::main()
}

#[cfg(feature = "otel")]
mod hot {
    use std::hint::black_box;
    use std::time::{Duration, Instant, SystemTime};

    use futures::StreamExt;
    use kaos_agents::otel::{MemoryExporter, OTelHook};
    use kaos_agents::{
        Agent, FunctionClient, KaosRuntime, LlmRequest, Message, ProviderResponse, Runner,
    };
    use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer, TracerProvider as _};
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{
        BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
    };

    type BoxError = Box<dyn std::error::Error>;

    const MODEL: &str = "function-test";

    /// The bench's fake model (same texts, same classifier test).
    fn chat_model(messages: &[Message], _request: &LlmRequest) -> ProviderResponse {
        let classifier = messages
            .first()
            .is_some_and(|m| m.content.contains("intent") && m.content.contains("reasoning"));
        if classifier {
            ProviderResponse::from_text(
                r#"{"intent":"respond","confidence":0.95,"reasoning":"small talk needs no tools"}"#,
            )
            .with_usage(100, 10)
        } else {
            ProviderResponse::from_text(r#"{"response":"Hello from the agent."}"#)
                .with_usage(200, 20)
        }
    }

    fn runner() -> Result<Runner, BoxError> {
        let agent = Agent::builder()
            .name("bench-chat")
            .instructions("You are a helpful assistant.")
            .model(MODEL)
            .build()?;
        let client = FunctionClient::new(chat_model).without_recording();
        Ok(Runner::new(
            agent,
            KaosRuntime::test_mode().with_client(MODEL, client),
        ))
    }

    #[derive(Debug)]
    struct NoopExporter;

    impl SpanExporter for NoopExporter {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            black_box(batch);
            Ok(())
        }
    }

    fn provider(batch: bool) -> SdkTracerProvider {
        let b = SdkTracerProvider::builder();
        if batch {
            b.with_span_processor(BatchSpanProcessor::builder(NoopExporter).build())
                .build()
        } else {
            b.build()
        }
    }

    async fn drain(runner: &Runner, session: String) -> usize {
        let mut stream = runner.run("Hello there!", session);
        let mut n = 0;
        while let Some(event) = stream.next().await {
            black_box(&event);
            n += 1;
        }
        n
    }

    async fn turns(runner: &Runner, tag: &str, n: usize) -> Duration {
        let ids: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
        let t = Instant::now();
        for id in ids {
            drain(runner, id).await;
        }
        t.elapsed()
    }

    /// One recorded span: what the floor recreates.
    struct Shape {
        name: String,
        kind: SpanKind,
        parent: Option<usize>,
        attrs: Vec<KeyValue>,
        status: Status,
    }

    /// The spans one hooked turn makes, in start order, with their parents.
    async fn shapes() -> Result<Vec<Shape>, BoxError> {
        let exporter = MemoryExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let r = runner()?.with_hook(OTelHook::new(provider.tracer("shape")));
        drain(&r, "shape".into()).await;
        let mut spans = exporter.spans();
        // Start order, parents before children (a child may start at its parent's time).
        let depth = |s: &SpanData, all: &[SpanData]| {
            let mut d = 0;
            let mut p = s.parent_span_id;
            while let Some(up) = all.iter().find(|o| o.span_context.span_id() == p) {
                d += 1;
                p = up.parent_span_id;
            }
            d
        };
        let depths: Vec<(SystemTime, usize)> = spans
            .iter()
            .map(|s| (s.start_time, depth(s, &spans)))
            .collect();
        let mut order: Vec<usize> = (0..spans.len()).collect();
        order.sort_by_key(|i| depths[*i]);
        let mut spans: Vec<SpanData> = {
            let mut slots: Vec<Option<SpanData>> = spans.drain(..).map(Some).collect();
            order.iter().filter_map(|i| slots[*i].take()).collect()
        };
        let ids: Vec<_> = spans.iter().map(|s| s.span_context.span_id()).collect();
        Ok(spans
            .drain(..)
            .map(|s| Shape {
                parent: ids.iter().position(|id| *id == s.parent_span_id),
                name: s.name.to_string(),
                kind: s.span_kind,
                attrs: s.attributes,
                status: s.status,
            })
            .collect())
    }

    /// The floor: the same spans through the SDK directly (attributes cloned from the
    /// recorded ones, as a direct instrumentation would build them), start and end times set.
    fn floor_turn(tracer: &SdkTracer, shapes: &[Shape]) {
        let t0 = SystemTime::now();
        let mut cxs: Vec<Context> = Vec::with_capacity(shapes.len());
        for s in shapes {
            let parent = s
                .parent
                .and_then(|p| cxs.get(p).cloned())
                .unwrap_or_else(Context::current);
            let span = tracer
                .span_builder(s.name.clone())
                .with_kind(s.kind.clone())
                .with_start_time(t0)
                .with_attributes(s.attrs.clone())
                .start_with_context(tracer, &parent);
            cxs.push(parent.with_span(span));
        }
        for (cx, s) in cxs.iter().zip(shapes).rev() {
            let span = cx.span();
            span.set_status(s.status.clone());
            span.end_with_timestamp(t0);
        }
    }

    fn floor(tracer: &SdkTracer, shapes: &[Shape], n: usize) -> Duration {
        let t = Instant::now();
        for _ in 0..n {
            floor_turn(tracer, shapes);
        }
        t.elapsed()
    }

    fn us(d: Duration, n: usize) -> f64 {
        d.as_secs_f64() * 1e6 / n as f64
    }

    pub fn main() -> Result<(), BoxError> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mode = args.first().map(String::as_str).unwrap_or("all");
        let n: usize = args
            .get(1)
            .map(|s| s.parse())
            .transpose()?
            .unwrap_or(20_000);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let shapes = shapes().await?;
            let plain = provider(false);
            let batch = provider(true);
            let off = runner()?;
            let on = runner()?.with_hook(OTelHook::new(plain.tracer("hot")));
            let on_batch = runner()?.with_hook(OTelHook::new(batch.tracer("hot")));
            let (plain_t, batch_t) = (plain.tracer("floor"), batch.tracer("floor"));
            match mode {
                "shape" => {
                    for s in &shapes {
                        println!(
                            "{:<32} {:?} parent={:?} attrs={}",
                            s.name,
                            s.kind,
                            s.parent,
                            s.attrs.len()
                        );
                    }
                }
                "off" => println!("off {:.3} us/turn", us(turns(&off, "off", n).await, n)),
                "on" => println!("on {:.3} us/turn", us(turns(&on, "on", n).await, n)),
                "on-batch" => println!(
                    "on-batch {:.3} us/turn",
                    us(turns(&on_batch, "onb", n).await, n)
                ),
                "floor" => println!("floor {:.3} us/turn", us(floor(&plain_t, &shapes, n), n)),
                "floor-batch" => println!(
                    "floor-batch {:.3} us/turn",
                    us(floor(&batch_t, &shapes, n), n)
                ),
                _ => {
                    // Warm up, then interleave in rounds so drift hits every mode.
                    let w = n / 10;
                    turns(&off, "w0", w).await;
                    turns(&on, "w1", w).await;
                    turns(&on_batch, "w2", w).await;
                    floor(&plain_t, &shapes, w);
                    floor(&batch_t, &shapes, w);
                    let rounds = 10;
                    let per = n / rounds;
                    let mut t = [Duration::ZERO; 5];
                    for r in 0..rounds {
                        t[0] += turns(&off, &format!("off{r}"), per).await;
                        t[1] += turns(&on, &format!("on{r}"), per).await;
                        t[2] += floor(&plain_t, &shapes, per);
                        t[3] += turns(&on_batch, &format!("onb{r}"), per).await;
                        t[4] += floor(&batch_t, &shapes, per);
                    }
                    let m = per * rounds;
                    let [off_us, on_us, floor_us, onb_us, floorb_us] = t.map(|d| us(d, m));
                    println!("no processor:   off {off_us:.3} us/turn, on {on_us:.3} (ratio {:.3}), floor {floor_us:.3} us/turn (ratio {:.3}); hook over floor {:.3} us",
                        off_us / on_us, off_us / (off_us + floor_us), on_us - off_us - floor_us);
                    println!("batch + no-op:  off {off_us:.3} us/turn, on {onb_us:.3} (ratio {:.3}), floor {floorb_us:.3} us/turn (ratio {:.3}); hook over floor {:.3} us",
                        off_us / onb_us, off_us / (off_us + floorb_us), onb_us - off_us - floorb_us);
                }
            }
            let _ = plain.shutdown();
            let _ = batch.shutdown();
            Ok(())
        })
    }
}
