-- JaSMIn annual report (seed 000): who registered (patient or guardian) and whether the
-- registrant can be contacted (the seed: 99.0 %).
-- JaSMIn 年次報告: 登録者区分（本人・保護者）・連絡可否別登録者数
SELECT registrant_type, contactable, COUNT(DISTINCT pid) AS registrants
FROM jasmin_registrant
GROUP BY registrant_type, contactable
ORDER BY registrant_type, contactable
