package tools_test

import (
	"context"
	"fmt"
	"time"

	"github.com/kilnhq/kiln/internal/llm"
	"github.com/kilnhq/kiln/internal/llm/tools"
)

func ExampleRegistry_Run() {
	r, err := tools.NewRegistry(tools.Builtins()...)
	if err != nil {
		panic(err)
	}
	ctx := context.Background()
	for _, args := range []string{`{"expression": "2 ^ 3 ^ 2 - sqrt(16)"}`, `{"expression": "1 / 0"}`, `{"expr": "1"}`} {
		res := r.Run(ctx, llm.ToolCall{ID: "call_1", Name: "calculator", Arguments: args}, 5*time.Second)
		fmt.Printf("error=%t %s\n", res.IsError, res.Content)
	}
	// Output:
	// error=false 508
	// error=true calculator: division by zero at position 3
	// error=true invalid arguments for tool "calculator":
	// - (arguments object): missing property 'expression'
	// - (arguments object): additional properties 'expr' not allowed
	// Fix the arguments and call the tool again.
}
