"""Pure, unit-tested logic shared by the stages: data contracts, io, config, splitting,
models, features, metrics. Nothing in here reads ``params.yaml`` or argv."""
