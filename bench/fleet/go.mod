module taskapi/bench/fleet

go 1.25.0
