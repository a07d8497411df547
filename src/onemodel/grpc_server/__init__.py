"""The gRPC server process: the Open Inference Protocol's GRPCInferenceService.

Runs in its own process, started and supervised by the Gunicorn master when GRPC_PORT is
set (``python -m onemodel.grpc_server``). Like a web worker it is a client of the model
server (boundary/client.py), so its requests share the model server's batches with HTTP
ones. It imports the boundary, settings, errors and the web tier's pure protocol modules
(served_model, tensors) and its decode sandbox (image_decoder: encoded images decode in
child processes, as uploads do); never Flask, TensorFlow or onemodel.model_server.
"""
