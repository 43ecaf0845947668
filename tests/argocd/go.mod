module example.invalid/testenv/argocd

go 1.26.0

require (
	github.com/yuin/gopher-lua v1.1.2
	gopkg.in/yaml.v3 v3.0.1
	layeh.com/gopher-json v0.0.0-20190114024228-97fed8db8427
)
