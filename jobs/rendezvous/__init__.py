"""The rendezvous job: one answer per request, chosen by the active schedule, on time."""
