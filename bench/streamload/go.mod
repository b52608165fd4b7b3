module taskapi/bench/streamload

go 1.22
