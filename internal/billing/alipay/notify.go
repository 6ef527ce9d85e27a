package alipay

import (
	"net/url"
)

// Success is the literal body Alipay expects for a notification it should not send again;
// anything else (Failure) makes it retry.
const (
	Success = "success"
	Failure = "fail"
)

// Notification is a verified asynchronous notification (notify_type trade_status_sync).
type Notification struct {
	NotifyID    string
	NotifyType  string
	TradeNo     string
	OutTradeNo  string
	TradeStatus string // WAIT_BUYER_PAY, TRADE_CLOSED, TRADE_SUCCESS, TRADE_FINISHED
	Total       int64  // total_amount, in fen
	// RefundFee is the amount refunded so far, in fen, and OutBizNo the refund's number,
	// when the notification reports a refund.
	RefundFee int64
	OutBizNo  string
	GmtRefund string
	Params    url.Values // every parameter, as received
}

// Paid reports whether the notification says the buyer paid.
func (n Notification) Paid() bool {
	return n.TradeStatus == "TRADE_SUCCESS" || n.TradeStatus == "TRADE_FINISHED"
}

// Refunded reports whether the notification reports a refund.
func (n Notification) Refunded() bool { return n.GmtRefund != "" || n.RefundFee > 0 }

// ParseNotify verifies a form-encoded notification body: RSA2 with Alipay's public key
// over its parameters less sign and sign_type, for this app. Any failure wraps ErrInvalid.
func (c *Client) ParseNotify(body []byte) (Notification, error) {
	params, err := url.ParseQuery(string(body))
	if err != nil {
		return Notification{}, invalid("body is not a form: %v", err)
	}
	for k, v := range params {
		if len(v) != 1 {
			return Notification{}, invalid("parameter %.32q is repeated", k)
		}
	}
	if params.Get("sign_type") != "RSA2" {
		return Notification{}, invalid("sign_type %.16q, want RSA2", params.Get("sign_type"))
	}
	if err := c.verify([]byte(SignContent(params, "sign", "sign_type")), params.Get("sign")); err != nil {
		return Notification{}, err
	}
	if params.Get("app_id") != c.cfg.AppID {
		return Notification{}, invalid("app_id %.32q is not this app's", params.Get("app_id"))
	}
	n := Notification{NotifyID: params.Get("notify_id"), NotifyType: params.Get("notify_type"), TradeNo: params.Get("trade_no"),
		OutTradeNo: params.Get("out_trade_no"), TradeStatus: params.Get("trade_status"), OutBizNo: params.Get("out_biz_no"),
		GmtRefund: params.Get("gmt_refund"), Params: params}
	if n.NotifyID == "" || n.OutTradeNo == "" || n.TradeStatus == "" {
		return Notification{}, invalid("notify_id, out_trade_no and trade_status are required")
	}
	if n.Total, err = Fen(params.Get("total_amount")); err != nil {
		return Notification{}, invalid("total_amount: %v", err)
	}
	if fee := params.Get("refund_fee"); fee != "" {
		if n.RefundFee, err = Fen(fee); err != nil {
			return Notification{}, invalid("refund_fee: %v", err)
		}
	}
	return n, nil
}
