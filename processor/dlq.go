package processor

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kgo"
)

// DLQTopic is app's dead-letter topic.
func DLQTopic(app string) string { return app + "-dlq" }

// Headers of a dead letter, beside the original record's own headers.
const (
	HeaderTopic     = "fs.topic"     // the source topic
	HeaderPartition = "fs.partition" // the source partition, decimal
	HeaderOffset    = "fs.offset"    // the source offset, decimal
	HeaderReason    = "fs.reason"    // decode, no_key, no_time, bad_value, late, future
	HeaderError     = "fs.error"     // what exactly was wrong
	HeaderTruncated = "fs.truncated" // the original value's size, when cut
)

// maxDeadLetterValue bounds a dead letter's value, so a record that was too
// large to apply is not also too large to dead-letter.
const maxDeadLetterValue = 512 << 10

// deadLetter is the DLQ record for rec: its key, value (cut to
// maxDeadLetterValue), timestamp and headers, plus headers saying where it
// came from and why it was not applied. It goes to the source partition's
// number in the DLQ topic, which has the input's partition count.
func (p *Processor) deadLetter(rec *kgo.Record, reason string, err error) *kgo.Record {
	value := rec.Value
	headers := append(rec.Headers[:len(rec.Headers):len(rec.Headers)],
		kgo.RecordHeader{Key: HeaderTopic, Value: []byte(rec.Topic)},
		kgo.RecordHeader{Key: HeaderPartition, Value: strconv.AppendInt(nil, int64(rec.Partition), 10)},
		kgo.RecordHeader{Key: HeaderOffset, Value: strconv.AppendInt(nil, rec.Offset, 10)},
		kgo.RecordHeader{Key: HeaderReason, Value: []byte(reason)},
		kgo.RecordHeader{Key: HeaderError, Value: []byte(truncate(err.Error(), 1024))},
	)
	if len(value) > maxDeadLetterValue {
		headers = append(headers, kgo.RecordHeader{Key: HeaderTruncated, Value: strconv.AppendInt(nil, int64(len(value)), 10)})
		value = value[:maxDeadLetterValue]
	}
	return &kgo.Record{
		Topic:     p.dlqTopic,
		Partition: rec.Partition,
		Key:       rec.Key,
		Value:     value,
		Headers:   headers,
		Timestamp: rec.Timestamp,
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func headerValue(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
