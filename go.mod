module github.com/epair-cni/epair

go 1.26.0
