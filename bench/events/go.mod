module taskapi/bench/events

go 1.25.0
