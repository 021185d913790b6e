// Package bench holds featurestream's load generator (realistic shop
// traffic: Zipf-distributed users and items) and, as it grows, the
// end-to-end benchmark harness. The dev command's --demo uses the same
// generator.
package bench
