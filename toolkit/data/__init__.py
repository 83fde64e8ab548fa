"""Audio data: manifests (:mod:`.manifest`), webdataset shards (:mod:`.shards`) and the streaming
loader (:mod:`.datamodule`). Submodules are imported on demand so ``toolkit manifest`` stays light."""
