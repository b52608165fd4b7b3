module taskapi/bench/dbproxy

go 1.25.0
