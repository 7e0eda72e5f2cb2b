//! Producing, the Kafka client's own: the record mot produces ([`Outgoing`]) and how a
//! [`HomeProducer`] hands records to its cluster. Nothing here blocks a thread: a full producer
//! queue is waited out asynchronously, and a flush runs on a blocking thread.

use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::clients::HomeProducer;
use super::names::TopicName;

/// A record to produce on the home cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: TopicName,
    /// `None` keeps a keyless record keyless (a localizer copies what it finds).
    pub key: Option<Vec<u8>>,
    /// `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// Record timestamp to keep (a localizer keeps the source's); `None` lets Kafka set it.
    pub timestamp_ms: Option<i64>,
}

impl Outgoing {
    /// The tombstone of this record's key on its topic: what lets compaction drop the key.
    pub fn tombstone(&self) -> Self {
        Self {
            topic: self.topic.clone(),
            key: self.key.clone(),
            value: None,
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }
}

/// A record handed to the producer: the future of its acknowledgement, or why it was not taken.
pub type Enqueued = Result<DeliveryFuture, KafkaError>;

/// How long a record waits for room in a full producer queue before it is refused.
const QUEUE_ROOM_WAIT: Duration = Duration::from_secs(30);

impl HomeProducer {
    /// Hands `out` to the producer, which copies it, and returns the future of its
    /// acknowledgement. The producer's queue is bounded: when it is full this waits (asynchronously)
    /// for room, so a slow cluster slows its callers instead of growing anything. Records handed
    /// over one after the other keep their order.
    pub async fn enqueue(&self, out: &Outgoing) -> Enqueued {
        let deadline = Instant::now() + QUEUE_ROOM_WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            match self.inner.send_result(record(out)) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if Instant::now() < deadline =>
                {
                    // The producer's own thread serves delivery reports meanwhile.
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Hands every record of `outs` to the producer, in order.
    pub async fn enqueue_all(&self, outs: &[Outgoing]) -> Vec<Enqueued> {
        let mut enqueued = Vec::with_capacity(outs.len());
        for out in outs {
            enqueued.push(self.enqueue(out).await);
        }
        enqueued
    }

    /// Produces `out` and waits for the cluster's acknowledgement.
    pub async fn send(&self, out: &Outgoing) -> Result<(), KafkaError> {
        acknowledged(self.enqueue(out).await).await
    }

    /// Produces every record of `outs`, in order, and waits until all are acknowledged; the
    /// first failure, if any.
    pub async fn send_all(&self, outs: &[Outgoing]) -> Result<(), KafkaError> {
        all_acknowledged(self.enqueue_all(outs).await).await
    }

    /// Waits (up to 10 s, on a blocking thread) until every record handed to the producer is
    /// acknowledged.
    pub async fn flush(&self) {
        let producer = self.clone();
        let flushed = tokio::task::spawn_blocking(move || producer.flush_blocking()).await;
        if let Err(e) = flushed {
            tracing::warn!(cluster = %self.cluster, error = %e, "producer flush did not finish");
        }
    }
}

/// Waits for the broker's acknowledgement of an enqueued record.
pub async fn acknowledged(delivery: Enqueued) -> Result<(), KafkaError> {
    match delivery?.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}

/// Waits for every acknowledgement of `deliveries`; the first failure, if any.
pub async fn all_acknowledged(deliveries: Vec<Enqueued>) -> Result<(), KafkaError> {
    let mut result = Ok(());
    for delivery in deliveries {
        if let Err(e) = acknowledged(delivery).await {
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}

fn record(out: &Outgoing) -> FutureRecord<'_, [u8], [u8]> {
    let mut headers = OwnedHeaders::new_with_capacity(out.headers.len());
    for (key, value) in &out.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value),
        });
    }
    let mut record: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(out.topic.as_str()).headers(headers);
    if let Some(key) = &out.key {
        record = record.key(key.as_slice());
    }
    if let Some(value) = &out.value {
        record = record.payload(value.as_slice());
    }
    if let Some(ts) = out.timestamp_ms {
        record = record.timestamp(ts);
    }
    record
}
