-- test_own_events.sh: the run a "note" starts at its own site.
return {n = event.payload.n, id = event.id}
