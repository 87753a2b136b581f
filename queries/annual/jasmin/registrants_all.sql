-- Registrants up to the end of the fiscal year, all disease groups. / 登録者数（累計、全疾患群）
SELECT COUNT(DISTINCT pid) AS n
FROM jasmin_registrant
WHERE fiscal_year <= {fy}
