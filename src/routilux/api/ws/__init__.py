"""Live event streams over WebSockets: job, debug, flow and generic subscription sockets."""
