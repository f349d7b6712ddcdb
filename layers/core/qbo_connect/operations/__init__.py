"""What operators and other workloads ask of ConnectionsFunction (list, get, refresh,
import, disconnect, history)."""
