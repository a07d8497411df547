"""``python -m onemodel.grpc_server``: the gRPC server process (see main.py)."""

from onemodel.grpc_server.main import main

if __name__ == "__main__":
    main()
