"""The gateway: callers reach the whole rendezvous system through one Open Inference Protocol (KServe V2 REST)
endpoint (`rendezvous serve`). `protocol` maps V2 tensors to requests and answers to V2 responses (pure),
`router` hands answers to waiting callers by request id, `kafka` is its one producer and one consumer,
`server` the aiohttp application, `client` a small Python client."""
